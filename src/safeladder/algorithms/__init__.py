"""SafeLadder's algorithms: small pure functions on tensors, chosen by name from registries.

- `advantages.py`: reward → advantage estimators (GRPO, mean baseline) and advantage
  transforms applied after them (CALE, constraints), plus dynamic sampling.
- `losses.py`: policy losses (PPO ratio-clip, CPGD), the CPGD drift term, the k3 KL, and the
  token → scalar aggregation modes.
- `logprobs.py`: per-token log-probs of completions under a model (the one forward pass the
  losses need).

Registries (`registry.Registry`) are filled by decorators, e.g. `@ADVANTAGES.register("grpo")`,
`@POLICY_LOSSES.register("cpgd")`; configs name entries, trainers look them up — there is no
if/elif over algorithm names.
"""
