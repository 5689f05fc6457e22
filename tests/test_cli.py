"""The command line, driven through ``main([...])`` and once through the installed console script."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stainlab
from stainlab.cli import main
from stainlab.io import read_image
from synth import he_image

SCALES = [(0.6, 1.3), (1.4, 0.7), (1.0, 1.0), (0.8, 0.5)]


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def src(tmp_path):
    """A folder of four H&E tiles stained with different strengths."""
    for i, scale in enumerate(SCALES):
        _save(tmp_path / "src" / f"tile{i}.png", he_image((48, 64), seed=10 + i, scale=scale))
    return tmp_path / "src"


@pytest.fixture
def ref(tmp_path, he_reference):
    return _save(tmp_path / "ref.png", he_reference)


def _normalize(src, out, *extra):
    return main(["normalize", str(src), "-o", str(out), *map(str, extra)])


def test_normalize_folder_equals_the_api_and_leaves_inputs_alone(tmp_path, src, ref, capsys):
    before = _hashes(src)
    assert _normalize(src, tmp_path / "out", "-m", "reinhard", "-r", ref) == 0
    expected = stainlab.load("reinhard").fit(read_image(ref)[0])
    for path in sorted(src.iterdir()):
        out, notes = read_image(tmp_path / "out" / path.name)
        assert notes == [] and np.array_equal(out, expected(read_image(path)[0]))
    assert _hashes(src) == before
    assert "normalized 4 of 4 images with reinhard" in capsys.readouterr().out


def test_one_corrupt_file_does_not_stop_the_others(tmp_path, src, ref, capsys):
    _truncate(_save(src / "bad.png", he_image((48, 64), seed=3)))
    (src / "notes.png").write_text("not an image")
    before = _hashes(src)
    assert _normalize(src, tmp_path / "out", "-m", "reinhard", "-r", ref) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()
                  if not p.name.startswith(".")) == [f"tile{i}.png" for i in range(4)]
    err = capsys.readouterr().err
    assert f"stainlab: error: {src / 'bad.png'}: truncated or corrupt image" in err
    assert f"stainlab: error: {src / 'notes.png'}: not an image file" in err
    assert "Traceback" not in err
    assert _hashes(src) == before


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, src, ref, capsys):
    out = tmp_path / "out"
    assert _normalize(src, out, "-m", "reinhard", "-r", ref) == 0
    good = _hashes(out)
    _save(out / "tile0.png", np.zeros((48, 64, 3), np.uint8))  # stands for a stale result
    capsys.readouterr()
    assert _normalize(src, out, "-m", "reinhard", "-r", ref) == 0  # a re-run resumes: nothing to do
    captured = capsys.readouterr()
    assert "4 output(s) exist already, made by this same run; their inputs skipped" in captured.err
    assert "normalized 0 of 4 images" in captured.out
    assert read_image(out / "tile0.png")[0].max() == 0
    assert _normalize(src, out, "-m", "reinhard", "-r", ref, "--overwrite") == 0
    assert _hashes(out) == good


def test_outputs_of_another_method_or_reference_are_refused_not_skipped(tmp_path, src, ref, capsys):
    out = tmp_path / "out"
    assert _normalize(src, out, "-m", "reinhard", "-r", ref) == 0
    made = _hashes(out)
    capsys.readouterr()
    assert _normalize(src, out, "-m", "grayscale") == 1
    err = capsys.readouterr().err
    assert f"{out / 'tile0.png'}: was made by reinhard(" in err and "not by this run's grayscale(" in err
    assert "(and 3 more outputs there)" in err and "--overwrite" in err
    other_ref = _save(tmp_path / "ref2.png", he_image((40, 40), seed=9))
    assert _normalize(src, out, "-m", "reinhard", "-r", other_ref) == 1  # same method, another target
    assert _hashes(out) == made
    (tmp_path / "user").mkdir()
    _save(tmp_path / "user" / "tile2.png", np.zeros((8, 8, 3), np.uint8))  # a file stainlab did not write
    assert _normalize(src, tmp_path / "user", "-m", "grayscale") == 1
    assert "exists and was not written by stainlab" in capsys.readouterr().err
    assert _normalize(src, out, "-m", "grayscale", "--overwrite") == 0
    assert _normalize(src, out, "-m", "grayscale") == 0  # now a true repeat
    assert "4 output(s) exist already, made by this same run" in capsys.readouterr().err


def test_output_folder_inside_the_input_folder_resumes(tmp_path, src, ref, capsys):
    out = src / "normalized"
    assert _normalize(src, out, "-m", "reinhard", "-r", ref, "--recursive", "--format", "tif") == 0
    made = _hashes(out)
    assert _normalize(src, out, "-m", "reinhard", "-r", ref, "--recursive", "--format", "tif") == 0
    assert "normalized 0 of 4 images" in capsys.readouterr().out  # its own outputs are not inputs
    assert _hashes(out) == made


def test_fit_then_normalize_with_fitted_file_equals_method_and_reference(tmp_path, src, ref, capsys):
    fitted = tmp_path / "reinhard.json"
    assert main(["fit", "-m", "reinhard", "-r", str(ref), "-o", str(fitted)]) == 0
    assert main(["fit", "-m", "reinhard", "-r", str(ref), "-o", str(fitted)]) == 1
    assert f"{fitted}: exists (use --overwrite" in capsys.readouterr().err
    assert _normalize(src, tmp_path / "by-t", "-t", fitted) == 0
    assert _normalize(src, tmp_path / "by-m", "-m", "reinhard", "-r", ref) == 0
    assert _hashes(tmp_path / "by-t") == _hashes(tmp_path / "by-m")


def test_two_workers_give_identical_outputs(tmp_path, src, ref):
    assert _normalize(src, tmp_path / "one", "-m", "reinhard", "-r", ref, "--workers", 1) == 0
    assert _normalize(src, tmp_path / "two", "-m", "reinhard", "-r", ref, "--workers", 2) == 0
    assert _hashes(tmp_path / "two") == _hashes(tmp_path / "one")
    assert len(_hashes(tmp_path / "one")) == 4


def test_all_white_reference_is_refused_and_nothing_written(tmp_path, src, capsys):
    white = _save(tmp_path / "white.png", np.full((32, 32, 3), 255, np.uint8))
    assert _normalize(src, tmp_path / "out", "-m", "reinhard", "-r", white) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"stainlab: error: {white}: reinhard reference: no tissue")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_colliding_output_names_are_an_error_before_any_work(tmp_path, src, ref, capsys):
    import tifffile
    tifffile.imwrite(src / "tile0.tif", he_image((48, 64), seed=5), photometric="rgb")
    assert _normalize(src, tmp_path / "out", "-m", "reinhard", "-r", ref) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 'tile0.png'}: would be written by each of {src / 'tile0.png'}, " \
           f"{src / 'tile0.tif'}" in err
    assert not (tmp_path / "out").exists()


def test_conversion_notes_and_no_tissue_are_warnings_not_failures(tmp_path, ref, capsys):
    src = tmp_path / "src"
    _save(src / "glass.png", np.full((16, 16, 3), 250, np.uint8))
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(src / "g16.png")
    assert _normalize(src, tmp_path / "out", "-m", "reinhard", "--param", "mask=true", "-r", ref,
                      "--format", "tif") == 0
    err = capsys.readouterr().err
    assert f"stainlab: warning: {src / 'g16.png'}: 16-bit, scaled to 8-bit" in err
    assert f"stainlab: warning: {src / 'glass.png'}: reinhard: reinhard source: no tissue" in err
    assert "passed through unchanged" in err
    assert (read_image(tmp_path / "out" / "glass.tif")[0] == 250).all()


def test_reference_free_method_needs_no_reference(tmp_path, src, ref, capsys):
    assert _normalize(src, tmp_path / "out", "-m", "grayscale") == 0
    out = read_image(tmp_path / "out" / "tile1.png")[0]
    assert (out[..., 0] == out[..., 2]).all() and out.std() > 5
    assert _normalize(src, tmp_path / "out2", "-m", "reinhard") == 1
    assert "reinhard: needs a reference image; give one with -r REF" in capsys.readouterr().err


def test_methods_lists_reinhard(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("reinhard ") and "Reinhard 2001" in line for line in lines)


def test_methods_lists_every_learned_form_with_what_it_needs(capsys):
    assert main(["methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for kind in ("stainnet", "unet", "cyclegan", "ccgan", "pcnet", "derestainer", "pix2pix"):
        assert "needs a model file from" in lines[f"{kind}:PATH"], kind
    assert "`stainlab train distill`" in lines["unet:PATH"]
    assert "`stainlab train distill`" in lines["stainnet:PATH"]
    assert "published StainNet checkpoint" in lines["stainnet:PATH"]
    assert "`stainlab train cyclegan`" in lines["cyclegan:PATH"] and "latest_net_G_A.pth" in lines["cyclegan:PATH"]
    assert "`stainlab train derestainer`" in lines["derestainer:PATH"]
    assert "macenko:PATH" not in lines and "macenko" in lines


def test_usage_errors_debug_and_version(tmp_path, src, ref, capsys):
    assert _normalize(src, tmp_path / "out", "-m", "reinhard", "-t", "x.json") == 1  # one or the other
    assert "-t x.json already holds the method" in capsys.readouterr().err
    assert _normalize(src, tmp_path / "out", "-t", tmp_path / "missing.json") == 1
    assert f"stainlab: error: {tmp_path / 'missing.json'}: fitted-transform file not found" in capsys.readouterr().err
    assert _normalize(src, tmp_path / "out", "-m", "no-such-method", "-r", ref) == 1
    assert "unknown method 'no-such-method'" in capsys.readouterr().err
    assert main(["--debug", "normalize", str(src), "-o", str(tmp_path / "o"), "-t", "missing.json"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"stainlab {stainlab.__version__}"
    assert main(["normalize", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_console_script_reports_bad_file_and_exit_status(tmp_path, src, ref):
    _truncate(_save(src / "bad.png", he_image((48, 64), seed=3)))
    script = Path(sys.executable).with_name("stainlab")
    run = subprocess.run([str(script), "normalize", str(src), "-m", "reinhard", "-r", str(ref),
                          "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"stainlab: error: {src / 'bad.png'}: truncated or corrupt "
                                               "image (OSError: image file is truncated)"]
    assert len(_hashes(tmp_path / "out")) == 4


def test_repeated_notes_are_summarised_once_and_listed_with_verbose(tmp_path, ref, capsys):
    src = tmp_path / "grey"
    for i in range(5):
        _save(src / f"g{i}.png", np.repeat(he_image((24, 24), seed=i)[..., :1], 3, axis=2)[..., 0])
    assert _normalize(src, tmp_path / "out", "-m", "grayscale") == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"stainlab: warning: {src / 'g0.png'}: grayscale, replicated to RGB",
                   'stainlab: warning: and 4 more file(s) with the note "grayscale, replicated to RGB" (-v lists each)']
    assert _normalize(src, tmp_path / "out-v", "-m", "grayscale", "-v") == 0
    err = capsys.readouterr().err
    assert all(f"{src / f'g{i}.png'}: grayscale, replicated to RGB" in err for i in range(5))
    assert err.count("stainlab: info: wrote ") == 5
    assert _normalize(src, tmp_path / "out-q", "-m", "grayscale", "--quiet") == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_one_spelling_of_learned_models_and_a_reference_is_not_silently_ignored(tmp_path, src, ref, capsys):
    from stainlab.nets.files import save_model
    from stainlab.nets.unet import UNet

    model = save_model(tmp_path / "u.safetensors", UNet(base_channels=4), "unet", {"base_channels": 4})
    spellings = [["-m", f"unet:{model}"], ["-m", "unet", "--model", str(model)], ["--model", f"unet:{model}"]]
    for i, spelling in enumerate(spellings):
        assert _normalize(src, tmp_path / f"out{i}", *spelling) == 0
    assert _hashes(tmp_path / "out0") == _hashes(tmp_path / "out1") == _hashes(tmp_path / "out2")
    capsys.readouterr()
    assert main(["fit", "-m", f"unet:{model}", "-r", str(ref), "-o", str(tmp_path / "u.json")]) == 1
    assert "unet does not use a reference image (a learned model has its target from training); drop -r" \
        in capsys.readouterr().err
    assert _normalize(src, tmp_path / "x", "--model", str(model)) == 1
    assert "add -m KIND or give it as KIND:PATH" in capsys.readouterr().err
    assert _normalize(src, tmp_path / "x", "-m", "stainnet", "--model", f"unet:{model}") == 1
    assert "is a unet model; -m stainnet asks for another kind" in capsys.readouterr().err


def test_a_16_bit_tiff_reference_is_converted_like_any_image(tmp_path, src, he_reference, capsys):
    import tifffile

    ref16 = tmp_path / "ref16.tif"
    tifffile.imwrite(ref16, he_reference.astype(np.uint16) * 257, photometric="rgb")
    ref8 = _save(tmp_path / "ref8.png", he_reference)
    assert _normalize(src, tmp_path / "by16", "-m", "macenko", "-r", ref16) == 0
    assert f"{ref16}: 16-bit, scaled to 8-bit" in capsys.readouterr().err
    assert _normalize(src, tmp_path / "by8", "-m", "macenko", "-r", ref8) == 0
    assert _hashes(tmp_path / "by16") == _hashes(tmp_path / "by8")


def test_output_folder_equal_to_the_input_folder_with_another_format_resumes(tmp_path, src, ref, capsys):
    before = _hashes(src)
    assert _normalize(src, src, "-m", "reinhard", "-r", ref, "--format", "tif") == 0
    assert "normalized 4 of 4 images" in capsys.readouterr().out
    assert _normalize(src, src, "-m", "reinhard", "-r", ref, "--format", "tif") == 0
    assert "normalized 0 of 4 images" in capsys.readouterr().out  # the .tif outputs are not new inputs
    assert {k: v for k, v in _hashes(src).items() if k.endswith(".png")} == before
    assert _normalize(src, src, "-m", "reinhard", "-r", ref) == 1  # png over png would replace the inputs
    assert "would replace an input file" in capsys.readouterr().err


def test_a_finished_output_named_on_its_own_is_an_input(tmp_path, src, ref, capsys):
    out = tmp_path / "out"
    assert _normalize(src, out, "-m", "reinhard", "-r", ref, "--format", "tif") == 0
    capsys.readouterr()
    assert _normalize(out / "tile0.tif", out, "-m", "grayscale") == 0  # tile0.png from the normalized tile0.tif
    assert "normalized 1 of 1 images" in capsys.readouterr().out
    grey = read_image(out / "tile0.png")[0]
    assert (grey[..., 0] == grey[..., 2]).all() and grey.std() > 5
