"""tfdist-faults (issue 22): one real trial under tfdist-launch --max-restarts, and its argument checks.

The trial kills the training process with SIGKILL right after the first checkpoint (delay 0,
so the kill always lands mid-run); the launcher restarts it, and the run must end at the exact
final step, resumed from that checkpoint, with its last checkpoint restorable and nothing left
behind. Longer seeded runs: `python -m tfdist.faults` (docs/reliability.md).
"""

import pytest

from tfdist import faults


@pytest.mark.multiworker
def test_a_run_killed_mid_training_survives_under_the_launcher():
    args = faults.parse_args(["--train_steps=300", "--interval=50", "--model=mlp"])
    trial = faults.run_trial(faults.Trial("ctl", "1x2", 0, "kill", delay=0.0, draw=0.0), args)
    assert trial.survived, trial.problem
    assert trial.victim == 0 and trial.checkpoint_at_kill is not None and trial.checkpoint_at_kill < 300
    assert trial.resumed_at == trial.checkpoint_at_kill  # no recorded checkpoint was lost
    assert 0 <= trial.steps_lost <= args.interval


@pytest.mark.parametrize("argv, message", [
    (["--routes=keras"], "invalid --routes=keras: valid values are ctl, fit, estimator"),
    (["--layouts=4w"], "invalid --layouts=4w: valid values are 1x2, 2w"),
    (["--signals=hup"], "invalid --signals=hup: valid values are kill, term"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        faults.parse_args(argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err
