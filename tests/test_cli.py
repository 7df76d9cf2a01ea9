"""The command line: every example in docs/cli.md, model factories, errors."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fxns
from fxns.cli import load_model, main

ROOT = Path(__file__).resolve().parent.parent
# Where the command line is documented; every example in them is run.
DOCS = (ROOT / "README.md", ROOT / "docs" / "cli.md")

# The documented commands use ImageNet-sized inputs; the tests run them on
# smaller images to stay fast (everything else is as written).
FULL_SIZE, TEST_SIZE = "1,3,224,224", "1,3,64,64"


# A factory that returns (float model, quantized model, example batches).
TRIPLE = (
    "def triple():\n"
    "    model = net().eval()\n"
    "    data = [torch.randn(2, 3, 8, 8) for _ in range(2)]\n"
    "    return model, quantize_fx(model, data), data\n"
)


def _documented_commands() -> list[str]:
    text = "\n".join(path.read_text(encoding="utf-8") for path in DOCS)
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL)
    return [
        line.removeprefix("$ ").strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith("$ fxns ")
    ]


def test_docs_have_examples_of_every_command() -> None:
    commands = list(dict.fromkeys(_documented_commands()))
    used = {shlex.split(c)[1] for c in commands}
    assert used == {"compare", "weights", "variants", "sensitivity", "diff"}
    assert (
        "fxns compare torchvision.models:resnet18 --input-shape 1,3,224,224" in commands
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", list(dict.fromkeys(_documented_commands())))
def test_documented_command_runs(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    argv = shlex.split(command.replace(FULL_SIZE, TEST_SIZE))[1:]
    code = main(argv)
    out, err = capsys.readouterr()

    assert code == 0, err
    if "--output" in argv:
        written = tmp_path / argv[argv.index("--output") + 1]
        assert written.stat().st_size > 0
        assert out.startswith(f"fxns: wrote {written.name} (")
    else:
        assert out.strip(), "nothing printed"


def _factory_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(
        "import torch\nfrom torch import nn\nfrom fxns.quantize import quantize_fx\n\n"
        "def net():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(4 * 6 * 6, 2))\n\n" + body,
        encoding="utf-8",
    )
    return path


def test_factory_forms(tmp_path: Path) -> None:
    path = _factory_file(
        tmp_path,
        "def batches():\n"
        "    return [torch.randn(2, 3, 8, 8) for _ in range(3)]\n\n"
        "def triple():\n"
        "    model = net().eval()\n"
        "    return model, quantize_fx(model, batches()), batches()\n\n"
        "def pair():\n"
        "    model = net().eval()\n"
        "    return model, quantize_fx(model, batches())\n\n"
        "def many():\n"
        "    return net(), {'a': net()}, batches()\n",
    )
    loaded = load_model(f"{path}:net")
    assert loaded.quantized is None and loaded.batches is None
    assert not loaded.float_model.training  # put in eval mode
    loaded = load_model(f"{path}:triple")
    assert isinstance(loaded.quantized, torch.fx.GraphModule)
    assert len(loaded.batches or []) == 3
    assert load_model(f"{path}:pair").batches is None
    assert isinstance(load_model(f"{path}:many").quantized, dict)
    assert isinstance(load_model("torch.nn:Identity").float_model, nn.Identity)


def test_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _factory_file(tmp_path, TRIPLE)
    model = f"{path}:triple"

    assert main(["compare", model, "--format", "json", "--mode", "propagated"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "propagated"
    assert [r["kind"] for r in data["rows"]] == ["conv2d+relu", "flatten", "linear"]

    assert (
        main(["compare", model, "--format", "csv", "--sort", "sqnr", "--top", "2"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,kind,") and len(lines) == 3

    assert main(["weights", model, "--format", "markdown"]) == 0
    assert re.search(r"^\|\s+name\s+\| kind", capsys.readouterr().out, re.MULTILINE)

    assert main(["compare", model, "--format", "html"]) == 0
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>")

    assert main(["variants", model, "--format", "csv", "--metrics", "sqnr,mse"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("name,kind,given group,given sqnr")
    assert "fusion=none sqnr" in header

    assert main(["sensitivity", model, "--layers", "0", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["name"] for r in rows] == ["0"] and "gain" in rows[0]["metrics"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "resnet18"], "MODEL must be package.module:factory"),
        (["compare", "no_such_module_xyz:f"], "cannot import no_such_module_xyz"),
        (
            ["compare", "torch.nn:NoSuchThing"],
            "torch.nn has no attribute 'NoSuchThing'",
        ),
        (["compare", "missing/file.py:f"], "no file missing/file.py"),
        (["compare", "torchvision.models:resnet18"], "give --input-shape"),
        (["compare", "torch.nn:Identity", "--input-shape", "0,3"], "invalid shape"),
        (
            ["compare", "torchvision.models:resnet18", "--input-shape", "1,3"],
            "calibration batch 0 does not fit ResNet",
        ),
        (["compare", "torch:tensor"], "the factory torch:tensor failed"),
        (["compare", "torch.nn:Identity", "--format", "pdf"], "invalid choice: 'pdf'"),
        (["demo", "--train-seconds", "x"], "invalid float value"),
    ],
)
def test_errors_are_one_line_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("fxns") and message in err


def _status(argv: list[str]) -> int:
    """main's status, also for argparse's errors, which exit."""
    try:
        return main(argv)
    except SystemExit as done:
        return int(done.code or 0)


def test_bad_sort_metric_is_one_line(tmp_path: Path, capsys) -> None:
    path = _factory_file(tmp_path, "")
    code = main(["compare", f"{path}:net", "--input-shape", "1,3,8,8", "--sort", "snr"])
    assert code == 2
    assert capsys.readouterr().err == (
        "fxns: error: unknown metric 'snr'; did you mean 'sqnr'? "
        "this report has cosine, max_abs, mse, sqnr\n"
    )


def test_demo_prints_all_three_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--train-seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "fxns weights comparison" in out
    assert "fxns shadow comparison" in out
    assert "fxns propagated comparison" in out
    for kind in ("add+relu", "cat", "mul", "conv2d+batch_norm+relu"):
        assert kind in out


def test_python_dash_m_runs_and_errors_are_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fxns", "demo", "--train-seconds", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid float value" in done.stderr
    assert done.stderr.count("\n") == 1


# --- errors: one line on stderr, non-zero exit ------------------------------------


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("fxns: error: ", "fxns demo: error: ")), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND (see fxns --help)"),
        (["nope"], "invalid choice: 'nope'"),
        (["demo", "--top", "x"], "argument --top: invalid int value: 'x'"),
        (["demo", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
    ids=["no-command", "unknown-command", "bad-value", "unknown-option"],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in _one_line(capsys.readouterr().err)


def _failing_demo(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def run_demo(**kwargs: object) -> None:
        raise error

    monkeypatch.setattr("fxns.demo.run_demo", run_demo)


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (
            fxns.DataError("batch 0 (Tensor[2, 5] float32) does not fit\nthe model"),
            2,
            "fxns: error: batch 0 (Tensor[2, 5] float32) does not fit the model",
        ),
        (
            fxns.EngineError("the quantized model's module 'fc' cannot run"),
            2,
            "fxns: error: the quantized model's module 'fc' cannot run",
        ),
        (
            RuntimeError("something\nunexpected"),
            1,
            "fxns: error: RuntimeError: something unexpected (run with -v for the "
            "traceback)",
        ),
        (OSError(28, "No space left on device"), 1, "No space left on device"),
    ],
    ids=["fxns-error", "engine-error", "unexpected", "os-error"],
)
def test_errors_of_a_command_are_one_line_with_a_nonzero_status(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    status: int,
    message: str,
) -> None:
    _failing_demo(monkeypatch, error)
    assert main(["demo"]) == status
    captured = capsys.readouterr()
    assert message in _one_line(captured.err)


def test_verbose_adds_the_traceback_of_an_unexpected_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_demo(monkeypatch, ValueError("boom"))
    assert main(["-v", "demo"]) == 1
    err = capsys.readouterr().err
    assert (
        "Traceback" in err and err.splitlines()[-1] == "fxns: error: ValueError: boom"
    )


def test_an_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_demo(monkeypatch, KeyboardInterrupt())
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "fxns: interrupted\n"


# --- options: -v anywhere, --seed, --input-index, --output, --input-shape -------


def test_verbose_works_after_the_command_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_demo(monkeypatch, ValueError("boom"))
    assert main(["demo", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["demo"]) == 1
    assert "Traceback" not in capsys.readouterr().err


RANDOM_FACTORY = (
    "def random_net():\n"
    "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),\n"
    "                         nn.Linear(4 * 6 * 6, 2))\n\n"
    "def labelled():\n"
    "    model = net().eval()\n"
    "    return model, None, [(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))\n"
    "                         for _ in range(2)]\n"
)


def test_the_same_seed_gives_the_same_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The factory draws its weights from torch's generator, unseeded.
    model = f"{_factory_file(tmp_path, RANDOM_FACTORY)}:random_net"
    argv = ["compare", model, "--input-shape", "2,3,8,8", "--format", "json"]
    runs = []
    for seed in ("1", "1", "2"):
        torch.randn(7)  # whatever ran before must not matter
        assert main([*argv, "--seed", seed]) == 0
        runs.append(json.loads(capsys.readouterr().out)["rows"])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_input_index_picks_the_model_input_out_of_labelled_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = f"{_factory_file(tmp_path, RANDOM_FACTORY)}:labelled"
    assert main(["compare", model]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "batch 0 gives 2 model argument(s) but the model takes 1" in err
    assert "--input-index N (e.g. --input-index 0 for (input, label) pairs)" in err
    assert "input_fn" not in err  # no Python advice on the command line

    assert main(["compare", model, "--input-index", "0", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["meta"]["batches"] == 2
    assert main(["sensitivity", model, "--input-index", "0", "--layers", "0"]) == 0
    capsys.readouterr()

    assert main(["compare", model, "--input-index", "2"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "--input-index 2 failed on batch 0" in err
    assert "every batch must have an element 2" in err


def test_output_into_a_missing_directory_fails_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("fxns.cli.load_model", never)
    target = tmp_path / "no" / "such" / "report.html"
    argv = ["compare", "torch.nn:Identity", "--input-shape", "1,3", "-o", str(target)]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"cannot write --output {target}: there is no directory" in err


def test_a_missing_batch_dimension_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _factory_file(tmp_path, "")
    assert main(["compare", f"{path}:net", "--input-shape", "3,8,8"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.endswith(
        "(--input-shape includes the batch dimension: if 3,8,8 is one sample, "
        "give --input-shape 1,3,8,8)"
    )


def test_a_wrong_number_of_inputs_gets_no_batch_dimension_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _factory_file(tmp_path, "")
    shape = ["--input-shape", "2,3,8,8"]
    assert main(["compare", f"{path}:net", *shape, *shape]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "batch dimension" not in err
    assert err.endswith(
        "(fxns made 2 input(s), one per --input-shape: give --input-shape once "
        "for each input the model's forward takes)"
    )


def test_a_sorted_table_says_what_it_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _factory_file(tmp_path, "")
    argv = ["compare", f"{path}:net", "--input-shape", "2,3,8,8", "--mode"]
    assert main([*argv, "propagated", "--sort", "sqnr", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "fxns propagated comparison: 2 of 3 layers, worst first by sqnr, 2 batches"
    )
    # The row named "0" is a name: left-aligned like the others.
    assert any(line.startswith("0 ") for line in lines)


def test_diff_writes_markdown_and_html(tmp_path: Path, capsys) -> None:
    path = _factory_file(tmp_path, "")
    assert main(["diff", f"{path}:net", "--input-shape", "1,3,8,8"]) == 0
    assert "matched" in capsys.readouterr().out
    args = ["diff", f"{path}:net", "--input-shape", "1,3,8,8", "--format"]
    assert main([*args, "markdown"]) == 0
    assert capsys.readouterr().out.lstrip().startswith("|")
    assert main([*args, "html"]) == 0
    assert "<pre class='fxns-diff'>" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main([*args, "csv"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'csv' (choose from 'table', 'markdown', 'html')" in err


def test_compare_html_shows_the_graph_diff(tmp_path: Path, capsys) -> None:
    path = _factory_file(tmp_path, "")
    argv = ["compare", f"{path}:net", "--input-shape", "1,3,8,8", "--format", "html"]
    assert main(argv) == 0
    assert "<pre class='fxns-diff'>" in capsys.readouterr().out


def test_input_shape_beside_the_factorys_batches_is_said_to_be_unused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _factory_file(tmp_path, TRIPLE)
    argv = ["compare", f"{path}:triple", "--input-shape", "2,3,16,16"]
    assert main(argv) == 0
    assert "returns example batches; --input-shape is not used" in caplog.text


def test_input_index_on_tensor_batches_says_to_drop_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _factory_file(tmp_path, TRIPLE)
    assert main(["compare", f"{path}:triple", "--input-index", "0"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.endswith("not tuples: drop --input-index")
