"""Stopping `vitc train` (Ctrl-C, SIGTERM, a kill) anywhere, then --resume: the run goes on from where its
resume state stands, and every epoch is in every log (metrics.jsonl, curves.png, TensorBoard) exactly once."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.train.conftest import TINY
from tests.train.test_distributed import _ranks
from vitc.artifacts.resume import resume_summary
from vitc.errors import VitcError
from vitc.train import launcher, report
from vitc.train.config import load_config
from vitc.train.interrupt import CtrlC, TrainingInterrupted
from vitc.train.loop import RunResult, train
from vitc.train.progress import EpochProgress
from vitc.train.report import TensorBoardLog, read_metrics

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
EPOCHS, STEPS = 3, 9  # the tiny run: 3 epochs of 3 steps (tests/train/conftest.py)


def _settings(out_dir: Path) -> dict[str, Any]:
    return {**TINY, "model.args": dict(TINY["model.args"]), "log.tensorboard": True, "run.out_dir": str(out_dir)}


def _run(settings: dict[str, Any], resume: bool = False) -> RunResult:
    return train(load_config(None, {**settings, "run.name": "tiny"}), resume=resume, show_progress=False)


@pytest.fixture(scope="module", autouse=True)
def curves_every_epoch() -> Iterator[None]:
    """curves.png drawn at every epoch's end, as TensorBoard's copy of it: these tests stop runs within the drawing
    of a given epoch (report.CURVES_EVERY_S: a run of 3 short epochs draws it at the last alone)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "CURVES_EVERY_S", 0.0)
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The uninterrupted run, named as the stopped ones are (curves.png's title is the run's name)."""
    return _run(_settings(tmp_path_factory.mktemp("straight")))


def _send(signum: int) -> None:
    """`signum` to this process, as a terminal, Slurm or `timeout` sends it; refused where SIGTERM has no
    handler (the code before it was handled), which would end the test run there and then."""
    if signum == signal.SIGTERM:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would end the process, saving nothing"
    os.kill(os.getpid(), signum)


def _stop_at_epochs_end(monkeypatch: pytest.MonkeyPatch, hook: str, epoch: int, signals: list[int]) -> None:
    """Send `signals` as the end of epoch `epoch` reaches report.`hook` (with the epoch's row in the history)."""
    original = getattr(report, hook)

    def stopping(history: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        if len(history) == epoch and history[-1]["epoch"] == epoch:
            for signum in signals:
                _send(signum)
        original(history, *args, **kwargs)

    monkeypatch.setattr(report, hook, stopping)


def _assert_resumes_as_straight(settings: dict[str, Any], straight: RunResult) -> None:
    """--resume finishes the stopped run with the uninterrupted run's history; metrics.jsonl and curves.png as
    its; each epoch and each step once in TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # TensorBoard reads a folder's event files in name order: the second they were opened, the host, the pid,
    # then a per-process counter, which in one pytest process can pass from 9 to 10 and sort the resumed
    # session's file first. A resumed process opens its file in a later second than the stopped one did.
    time.sleep(1.0 - time.time() % 1.0)
    resumed = _run(settings, resume=True)
    assert resumed.history == straight.history
    run_dir = resumed.run_dir
    for name in ("metrics.jsonl", "curves.png"):
        assert (run_dir / name).read_bytes() == (straight.run_dir / name).read_bytes(), name
    assert [row["epoch"] for row in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, EPOCHS + 1))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    epochs = list(range(1, EPOCHS + 1))
    assert [(e.step, e.value) for e in events.Scalars("epoch/val_top1")] == [
        (row["epoch"], pytest.approx(row["val_top1"])) for row in straight.history
    ]
    for tag in ("curves", "locality/attention_distance"):
        assert [e.step for e in events.Images(tag)] == epochs, tag
    assert [e.step for e in events.Scalars("step/loss")] == list(range(1, STEPS + 1))


@pytest.mark.parametrize(
    ("hook", "epoch", "signum"),
    [
        ("write_metrics", EPOCHS, signal.SIGTERM),  # the last epoch: its resume had nothing left to train
        ("plot_curves", 2, signal.SIGINT),
        ("plot_curves", EPOCHS, signal.SIGINT),
    ],
)
def test_a_stop_in_an_epochs_logs_waits_until_the_epoch_is_in_every_log(
    hook: str, epoch: int, signum: int, straight: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume state was saved before the epoch's logs, which Ctrl-C did not wait for and SIGTERM ended:
    --resume started from the next epoch and never wrote them. The epoch was missing from TensorBoard and
    curves.png for good, and the last epoch from metrics.jsonl too (its resume went straight to the test)."""
    settings = _settings(tmp_path)
    with monkeypatch.context() as patch:
        _stop_at_epochs_end(patch, hook, epoch, [signum])
        with pytest.raises(TrainingInterrupted) as stopped:
            _run(settings)
    said = "interrupted" if signum == signal.SIGINT else "stopped by SIGTERM"
    assert str(stopped.value).startswith(f"{said}; continue with: vitc train --resume {tmp_path / 'tiny'}")
    assert stopped.value.exit_code == 128 + signum
    summary = resume_summary(tmp_path / "tiny" / "resume.safetensors")
    assert summary is not None and summary.epochs_done == epoch  # it waited for the epoch to be recorded
    _assert_resumes_as_straight(settings, straight)


def test_a_stop_that_does_not_wait_runs_that_epochs_end_again(
    straight: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C pressed twice in the last epoch's logs stops at once: the resume state is then its epoch's
    start of the end (its row and best score taken back), which --resume runs again, rewriting metrics.jsonl
    from the history. It was saved as past that epoch, whose TensorBoard records and curves never came."""
    settings = _settings(tmp_path)
    with monkeypatch.context() as patch:
        _stop_at_epochs_end(patch, "plot_curves", EPOCHS, [signal.SIGINT, signal.SIGINT])
        with pytest.raises(TrainingInterrupted, match="interrupted; continue with"):
            _run(settings)
    summary = resume_summary(tmp_path / "tiny" / "resume.safetensors")
    assert summary is not None and (summary.epochs_done, summary.global_step) == (EPOCHS - 1, STEPS)
    assert len(read_metrics(tmp_path / "tiny" / "metrics.jsonl")) == EPOCHS  # written before the stop
    _assert_resumes_as_straight(settings, straight)


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The epochs curves.png showed each time it was drawn, with CURVES_EVERY_S longer than any test run."""
    monkeypatch.setattr(report, "CURVES_EVERY_S", 1e9)
    drawn: list[int] = []
    plot = report.plot_curves
    monkeypatch.setattr(
        report, "plot_curves", lambda history, *a, **k: (drawn.append(len(history)), plot(history, *a, **k))
    )
    return drawn


def test_curves_are_drawn_when_due_at_the_last_epoch_and_at_a_stop(
    straight: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawn at every epoch's end, curves.png took longer than a short epoch's training: it is drawn once
    CURVES_EVERY_S have passed since the run started or it was last drawn, at the last epoch, and by a stop whose
    epochs it lacks (Ctrl-C in epoch 2's logs: the stop waits until the epoch is recorded, then draws it).
    metrics.jsonl has every epoch."""
    settings = _settings(tmp_path)
    drawn = _drawn(monkeypatch)  # CURVES_EVERY_S = 1e9
    clock = report.CurvesClock()
    assert not clock.due(last=False) and clock.due(last=True)  # a first epoch that ended at once
    clock.drawn_at -= report.CURVES_EVERY_S
    assert clock.due(last=False)
    whole = _run({**settings, "run.out_dir": str(tmp_path / "whole")})
    assert drawn == [EPOCHS] and len(read_metrics(whole.run_dir / "metrics.jsonl")) == EPOCHS
    assert (whole.run_dir / "curves.png").read_bytes() == (straight.run_dir / "curves.png").read_bytes()
    drawn.clear()
    with monkeypatch.context() as patch:
        _stop_at_epochs_end(patch, "write_metrics", 2, [signal.SIGINT])
        with pytest.raises(TrainingInterrupted, match="interrupted; continue with"):
            _run(settings)
    assert drawn == [2]  # the stop's: the figure has every epoch of the resume state
    time.sleep(1.0 - time.time() % 1.0)  # TensorBoard's event files sort by the second they were opened
    with monkeypatch.context() as patch:  # Ctrl-C after the resumed session's first step: the figure lacks nothing
        patch.setattr(EpochProgress, "advance", lambda *_, **__: signal.raise_signal(signal.SIGINT))
        with pytest.raises(TrainingInterrupted, match="interrupted; continue with"):
            _run(settings, resume=True)
    assert drawn == [2, 2]  # --resume redrew the saved history; the stop did not draw it again
    time.sleep(1.0 - time.time() % 1.0)
    resumed = _run(settings, resume=True)
    assert drawn == [2, 2, 2, EPOCHS]  # --resume redraws the saved history, then the last epoch
    assert (resumed.run_dir / "curves.png").read_bytes() == (straight.run_dir / "curves.png").read_bytes()


class _Killed(BaseException):
    """A SIGKILL, as far as the run can tell: nothing of it runs after, no state is saved."""


def test_tensorboard_hides_what_a_killed_session_logged_past_the_resume_point(
    straight: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in epoch 2 after its step 5 was logged and flushed, the run resumes from epoch 1's end (step 3):
    the resumed session logged steps 4 and 5 again (twice, and out of order) with no purge. The purge is of
    every tag at and past step 4, which epoch 1's records, logged at step 1, are not."""
    settings = _settings(tmp_path)
    step = TensorBoardLog.step

    def killed(self: TensorBoardLog, global_step: int, **scalars: float) -> None:
        step(self, global_step, **scalars)
        if global_step == 5:
            self.writer.flush()
            raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(TensorBoardLog, "step", killed)
        with pytest.raises(_Killed):
            _run(settings)
    summary = resume_summary(tmp_path / "tiny" / "resume.safetensors")
    assert summary is not None and (summary.epochs_done, summary.global_step) == (1, 3)
    _assert_resumes_as_straight(settings, straight)


def test_sigterm_within_an_epoch_saves_the_exact_step(
    straight: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (Slurm's preemption, `timeout`, `docker stop`) ended a one-process run at once, with exit code
    143 and nothing said or saved past the last epoch's end. It is now taken as Ctrl-C: the exact step is
    saved, one line says how to continue, exit code 128 + 15."""
    settings = _settings(tmp_path)
    advance, calls = EpochProgress.advance, []

    def stopping(self: EpochProgress, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 5:  # epoch 2, once its second step is recorded
            _send(signal.SIGTERM)
        advance(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(EpochProgress, "advance", stopping)
        with pytest.raises(TrainingInterrupted) as stopped:
            _run(settings)
    assert str(stopped.value) == (f"stopped by SIGTERM; continue with: vitc train --resume {tmp_path / 'tiny'}")
    assert stopped.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Python's default again once the run is over
    summary = resume_summary(tmp_path / "tiny" / "resume.safetensors")
    assert summary is not None and (summary.epochs_done, summary.global_step) == (1, 5)
    assert summary.where() == "epoch 2 of 3, from its step 3"  # what `vitc train --resume` and `vitc info` say
    _assert_resumes_as_straight(settings, straight)


def test_a_stop_in_a_forward_leaves_batchnorms_statistics_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop landing in a step's forward (before the step is held) saved that batch's BatchNorm update (CvT's
    projections, SP-ViT's stem), which the resumed session's same forward then made again: a review found 45
    of cvt_micro's 187 tensors (running means, variances, counts) off the uninterrupted run's, and its val loss."""
    import torch
    from safetensors.torch import load_file

    from vitc.models.cvt import CvT

    settings = {**TINY, "model.name": "cvt_micro", "model.args": {}, "data.image_size": 16, "optim.epochs": 2}
    straight = train(load_config(None, {**settings, "run.out_dir": str(tmp_path / "a"), "run.name": "cvt"}))
    stopped = {**settings, "run.out_dir": str(tmp_path / "b"), "run.name": "cvt"}
    forward, forwards = CvT.forward, []

    def stopping(self: CvT, x: torch.Tensor) -> torch.Tensor:
        out = forward(self, x)  # its BatchNorms have taken this batch's statistics
        forwards.append(self.training)
        if forwards.count(True) == 4:  # epoch 2's first step (3 steps an epoch)
            _send(signal.SIGINT)
        return out

    with monkeypatch.context() as patch:
        patch.setattr(CvT, "forward", stopping)
        with pytest.raises(TrainingInterrupted):
            train(load_config(None, stopped), show_progress=False)
    resumed = train(load_config(None, stopped), resume=True, show_progress=False)
    assert resumed.history == straight.history
    a, b = (load_file(r.run_dir / "last.safetensors") for r in (straight, resumed))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_sigterm_waits_for_a_held_step_even_when_sent_again() -> None:
    """A second Ctrl-C cuts a held step short (someone insists); a second SIGTERM does not: Slurm signals every
    process of a job and the launcher its ranks again, and the sender's next word is SIGKILL anyway."""
    stop, done = CtrlC(), []
    with stop.installed(), pytest.raises(KeyboardInterrupt), stop.held():
        _send(signal.SIGTERM)
        _send(signal.SIGTERM)
        done.append("the step")
    assert done == ["the step"]
    assert (stop.said(), stop.exit_code) == ("stopped by SIGTERM", 143)
    assert (CtrlC().said(), CtrlC().exit_code) == ("interrupted", 130)


def test_a_ranks_own_sigterm_line_is_passed_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank that SIGTERM stopped saves and says how to continue, exit 143: the launcher printed its stderr
    as a bug's traceback and then 'rank 1 of 2 exited with code 143'."""
    said = "error: stopped by SIGTERM; continue with: vitc train --resume --nproc 2"
    script = f'if [ "$RANK" = 1 ]; then echo "{said}" >&2; exit 143; fi\nexec sleep 60\n'
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2, poll_s=0.05)
    assert str(stopped.value) == said[len("error: ") :]
    assert stopped.value.exit_code == 143


def test_a_rank_that_dies_while_rank_0_waits_stops_the_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 dies (a CUDA out-of-memory error, a bad image) while rank 0 waits for it, in the rendezvous or a
    collective that does not notice a dead peer (nccl's): the launcher polled rank 0 alone while it ran, so it
    saw nothing, left rank 1 a zombie and waited with rank 0 (for gloo's 30-minute rendezvous timeout)."""
    script = 'if [ "$RANK" = 1 ]; then echo "RuntimeError: CUDA out of memory" >&2; exit 1; fi\nexec sleep 60\n'
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    started = time.monotonic()
    with pytest.raises(VitcError, match=r"^rank 1 of 2 exited with code 1; the other process was stopped; --resume"):
        launcher.launch(["train"], nproc=2, poll_s=0.05)
    assert time.monotonic() - started < launcher.STOP_GRACE_S + 5


def test_a_rank_that_does_not_stop_after_ctrl_c_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After Ctrl-C the launcher waited for every rank without end: one blocked where Ctrl-C cannot reach it (an
    nccl collective whose peer has saved and gone) kept the whole job waiting. It gets SAVE_GRACE_S, as
    torchrun's workers get 30 s, and rank 0's resume line is passed on."""
    import threading

    said = "error: interrupted; continue with: vitc train --resume --nproc 2"
    script = f'trap "" INT\nif [ "$RANK" = 1 ]; then exec sleep 60; fi\nsleep 0.5; echo "{said}" >&2; exit 130\n'
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    monkeypatch.setattr(launcher, "SAVE_GRACE_S", 1.0)
    monkeypatch.setattr(launcher, "STOP_GRACE_S", 0.5)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2, poll_s=0.05)
    assert time.monotonic() - started < 10
    assert (str(stopped.value), stopped.value.exit_code) == (said[len("error: ") :], 130)
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning == "warning: rank 1 of 2 had not ended after Ctrl-C: stopped by the launcher"


def test_a_rank_hung_tearing_down_after_the_run_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 1 ended cleanly, so past the run's last barrier with every rank, while rank 0 hung leaving the
    process group (torch 2.4 to 2.7, vitc.train.distributed.shutdown): the launcher waited with it for ever
    after a complete run. It is stopped after FINISH_GRACE_S, in a warning: the run's files are complete."""
    script = 'if [ "$RANK" = 1 ]; then exit 0; fi\nexec sleep 60\n'
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    monkeypatch.setattr(launcher, "FINISH_GRACE_S", 1.0)
    started = time.monotonic()
    launcher.launch(["train"], nproc=2, poll_s=0.05)  # no error: the run finished
    assert time.monotonic() - started < 10
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning == (
        "warning: rank 0 of 2 had not ended 1 s after the run had finished: stopped by the launcher; "
        "the run's files are complete"
    )


def test_sigterm_to_the_launcher_gives_its_ranks_time_to_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher SIGTERMs its ranks, which now save where they stand: SIGKILL followed after the 5 s meant
    for a rank blocked on a dead peer, cutting a large model's save short."""
    import threading

    script = "trap 'kill $!; sleep 1; echo saved > \"$RANK.saved\"; exit 143' TERM\nsleep 60 & wait\n"  # a save of 1 s
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    monkeypatch.setattr(launcher, "STOP_GRACE_S", 0.2)
    monkeypatch.chdir(tmp_path)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(VitcError, match="stopped by SIGTERM: the 2 processes were stopped") as stopped:
        launcher.launch(["train"], nproc=2, poll_s=0.05, saved=lambda: "continue with: vitc train --resume")
    assert stopped.value.exit_code == 143
    assert sorted(path.name for path in tmp_path.glob("*.saved")) == ["0.saved", "1.saved"]


@pytest.mark.parametrize(
    ("platform", "said"),
    [("linux", "vitc train --resume '/data/my runs/tiny'"), ("win32", 'vitc train --resume "/data/my runs/tiny"')],
)
def test_the_resume_command_is_quoted_for_the_shell_it_is_pasted_into(
    platform: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cmd.exe keeps single quotes as part of a word: on Windows a path with a space is double-quoted."""
    from types import SimpleNamespace

    from vitc.train.run_folder import resume_command

    monkeypatch.setattr(sys, "platform", platform)
    cfg = SimpleNamespace(run=SimpleNamespace(out_dir="/data/my runs"), run_name="tiny")
    assert resume_command(cfg, 1, by_nproc=False) == said  # type: ignore[arg-type]


def test_a_ranks_bug_named_in_the_others_line_shows_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rank 1's bug in its start-up stops every rank with the agreed line (vitc.train.agree), rank 0's exit 2
    explains the run: the launcher passed that line on and dropped rank 1's traceback, which the line points to."""
    said = "error: rank 1 of 2 (vm): failed: KeyError: x (its traceback is in that process's output)"
    trace = ["Traceback (most recent call last):", '  File "setup.py", line 1', "KeyError: x"]
    printed = "\n".join(f"echo '{line}' >&2" for line in trace)
    # rank 0 ends first, with the agreed line; rank 1, still ending, is stopped by the launcher
    script = f'if [ "$RANK" = 1 ]; then\n{printed}\nexec sleep 60\nfi\nsleep 0.5; echo "{said}" >&2; exit 2\n'
    monkeypatch.setattr(sys, "executable", str(_ranks(tmp_path, script)))
    with pytest.raises(VitcError) as stopped:
        launcher.launch(["train"], nproc=2, poll_s=0.05)
    assert (str(stopped.value), stopped.value.exit_code) == (said[len("error: ") :], 2)
    assert capsys.readouterr().err.splitlines()[-3:] == trace


def test_training_takes_sigterm_over_from_the_cli_and_gives_it_back() -> None:
    """`vitc` takes SIGTERM as Ctrl-C for every command (vitc._signals.sigterm_as_ctrl_c); training installs its
    own handler over that one, or a SIGTERM mid-run would say `interrupted` and exit 130, and gives it back after."""
    from vitc._signals import SigtermAsCtrlC, sigterm_as_ctrl_c

    stop = CtrlC()
    with sigterm_as_ctrl_c() as cli:
        with stop.installed(), pytest.raises(KeyboardInterrupt):
            _send(signal.SIGTERM)
        assert (stop.said(), stop.exit_code, cli.received) == ("stopped by SIGTERM", 143, [])
        assert isinstance(signal.getsignal(signal.SIGTERM), SigtermAsCtrlC)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
