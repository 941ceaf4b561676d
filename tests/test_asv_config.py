"""asv.conf.json: every key is one asv knows, and the settings the suite depends on hold."""

import itertools
import re
from pathlib import Path

import pytest

asv_config = pytest.importorskip("asv.config", reason="asv is not installed; pip install -e '.[asv]'")
from asv.util import load_json  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "asv.conf.json"


@pytest.fixture(scope="module")
def conf():
    # asv's own loader: the file may hold // comments, which json.loads refuses.
    return asv_config.Config.load(str(CONF))


def test_every_key_is_one_asv_knows(conf):
    # asv copies the file's keys onto a Config without looking at them; the ones it reads are
    # its defaults, plus the format version and the build cache size it reads with getattr.
    known = set(vars(asv_config.Config())) | {"version", "build_cache_size"}
    written = set(load_json(str(CONF), js_comments=True))
    assert written <= known, f"keys asv would silently ignore: {sorted(written - known)}"


def test_torch_is_pinned_to_the_ci_build(conf):
    assert conf.matrix == {"req": {"torch": ["2.13.0"]}}


def test_builds_exactly_one_wheel(conf):
    # {wheel_file} must name one wheel: `pip wheel` would also drop torch's wheel in the cache.
    assert conf.build_command == ["python -m build --wheel --no-isolation -o {build_cache_dir} {build_dir}"]


def test_installs_each_commit_without_reinstalling_torch(conf):
    (command,) = conf.install_command
    assert "--no-deps" in command.split() and command.endswith("{wheel_file}")


@pytest.fixture(scope="module")
def entries():
    """Every benchmark at every point, named as asv publish matches its thresholds: "<name>(<params>)"."""
    from asv_runner.discovery import disc_benchmarks

    return [
        f"{b.name}({', '.join(point)})"
        for b in disc_benchmarks(str(CONF.parent / "benchmarks"))
        for point in itertools.product(*b.params)
    ]


def test_every_benchmark_has_a_regression_threshold_and_every_threshold_a_benchmark(conf, entries):
    for key, threshold in conf.regressions_thresholds.items():
        assert 0 < threshold <= 1, key
        assert any(re.match(key, entry) for entry in entries), f"{key!r} matches no benchmark (a typo?)"
    for entry in entries:
        assert any(re.match(key, entry) for key in conf.regressions_thresholds), f"{entry} has asv's default, 5%"


def test_everything_asv_writes_is_under_dot_asv_and_git_ignored(conf):
    for path in (conf.env_dir, conf.results_dir, conf.html_dir):
        assert Path(path).parts[0] == ".asv", path
    ignored = (CONF.parent / ".gitignore").read_text().split()
    assert ".asv/" in ignored


def test_default_timeout_fits_the_largest_point(conf):
    # simple_cnn's loop at B=1024 (full sweep) takes ~30 s a call on a busy 2-core CPU, and the
    # ratio benchmark times it and vmap for several rounds in one process.
    assert conf.default_benchmark_timeout >= 300
