"""Built-in data sources: loaders that turn packaged or in-house data into Samples."""
