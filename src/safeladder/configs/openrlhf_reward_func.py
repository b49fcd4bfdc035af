"""OpenRLHF custom reward function backed by SafeLadder's reward recipes (SPEC §3.2).

Pass this file to OpenRLHF as the reward "URL"; find its path with
`python -c "from safeladder.verifiers.adapters import openrlhf_reward_func_path as p; print(p())"`:

    export SAFELADDER_RECIPES=/path/to/recipes.yaml   # default: the released recipes
    python -m openrlhf.cli.train_ppo_ray ... --remote_rm_url <that path> --label_key label

Each `labels` entry (the --label_key column) is either a JSON object / dict such as
{"label": "math", "reference": "42"} — `label` picks the recipe, `reference` (or `answer`) is the
gold answer, `prompt` the plain request the judges should see, anything else is metadata — or a
plain answer string, routed by $SAFELADDER_LABEL.

`reward_func` returns OpenRLHF's dict form (recent versions; older ones expect only a tensor,
take `["rewards"]` there):
    rewards    [N] float tensor, used for the advantage (samples with one prompt form a group);
    scores     [N] in [0, 1]: reward / the label's largest attainable reward (dynamic filtering);
    extra_logs per objective: `safeladder/<objective>` (0 where it did not apply) and
               `safeladder/<objective>_applied` (0/1), logged to wandb.
The verifiers are built once per process (cached per recipes file).
"""

from __future__ import annotations

from typing import Any, Sequence

from safeladder.verifiers.adapters import get_computer, openrlhf_rewards


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
    """queries = prompt + response texts; the response is split off using `prompts`."""
    return openrlhf_rewards(queries, prompts, labels, computer=get_computer())
