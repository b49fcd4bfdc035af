"""The shipped accelerate configs are valid launch configs for `accelerate launch -m safeladder rl`."""

from __future__ import annotations

import pytest

from safeladder.configs import preset_path


@pytest.mark.parametrize("name,multi_gpu,fsdp", [("ddp", True, False), ("fsdp", False, True)])
def test_accelerate_config_launches_the_rl_command(name, multi_gpu, fsdp):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = preset_path(f"accelerate/{name}")
    assert path.is_file()
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "safeladder", "rl", "--config", "rl.yaml"])
    args, _, _ = _validate_launch_command(args)
    assert args.module and args.training_script == "safeladder" and args.training_script_args == ["rl", "--config", "rl.yaml"]
    assert (bool(args.multi_gpu), bool(args.use_fsdp), args.num_processes, args.mixed_precision) == (multi_gpu, fsdp, 2, "bf16")
    if fsdp:
        assert str(args.fsdp_version) == "2" and args.fsdp_state_dict_type == "FULL_STATE_DICT"
