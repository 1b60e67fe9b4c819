"""keras_grs.xla_cache: compiled programs kept on disk between processes."""

import os
import subprocess
import sys
import textwrap

import pytest

from keras_grs import xla_cache

OLD = 946684800  # 2000-01-01


@pytest.fixture
def environment(monkeypatch):
    """No cache flag inherited from the test run (conftest's), no setting of ours."""
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    monkeypatch.delenv(xla_cache.VARIABLE, raising=False)
    return monkeypatch


@pytest.mark.parametrize("value", ["0", "off", "False", "no", " "])
def test_turned_off(environment, value):
    environment.setenv(xla_cache.VARIABLE, value)
    assert xla_cache.root() is None
    assert xla_cache.enable() is None
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"


def test_default_root_follows_xdg(environment, tmp_path):
    environment.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert xla_cache.root() == tmp_path / "keras-grs" / "xla"
    environment.setenv(xla_cache.VARIABLE, "~/elsewhere")
    assert xla_cache.root() == xla_cache.Path.home() / "elsewhere"


def test_enable_adds_the_flag_once_per_machine_directory(environment, tmp_path):
    environment.setenv(xla_cache.VARIABLE, str(tmp_path))
    directory = xla_cache.enable()
    assert directory.parent == tmp_path and directory.is_dir()
    assert directory.name.startswith("tf") and directory.name == xla_cache.machine_tag()
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {xla_cache.FLAG}={directory}"
    assert xla_cache.enable() is None  # a flag is there: kept as it is
    assert os.environ["TF_XLA_FLAGS"].count(xla_cache.FLAG) == 1
    assert list(directory.iterdir()) == []  # the write probe is gone


def test_another_cache_directory_is_kept(environment, tmp_path):
    flags = f"{xla_cache.FLAG}={tmp_path / 'theirs'}"
    environment.setenv("TF_XLA_FLAGS", flags)
    environment.setenv(xla_cache.VARIABLE, str(tmp_path / "ours"))
    assert xla_cache.enable() is None
    assert os.environ["TF_XLA_FLAGS"] == flags
    assert not (tmp_path / "ours").exists()


def test_unwritable_directory_leaves_the_cache_off(environment, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    environment.setenv(xla_cache.VARIABLE, str(blocker / "cache"))
    assert xla_cache.enable() is None
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"
    assert blocker.read_text() == "not a directory"


def test_machine_tag_follows_the_xla_flags(environment):
    first = xla_cache.machine_tag()
    environment.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert xla_cache.machine_tag() != first
    environment.delenv("XLA_FLAGS")
    environment.setenv("TF_XLA_FLAGS", f"--tf_xla_auto_jit=0 {xla_cache.FLAG}=/somewhere")
    assert xla_cache.machine_tag() == first  # where the cache lives is not what the code is compiled for


def _entry(directory, name, size, used):
    path = directory / f"{xla_cache.ENTRY_PREFIX}__{name}__XLA_CPU_JIT.pb"
    path.write_bytes(b"x" * size)
    os.utime(path, (used, used))
    return path


def test_evict_removes_the_entries_used_longest_ago(tmp_path):
    old, new = tmp_path / "tf2.0.0-aaaa", tmp_path / "tf2.21.0-bbbb"
    old.mkdir()
    new.mkdir()
    entries = [_entry(old, "1", 300, OLD), _entry(new, "2", 300, OLD + 10), _entry(new, "3", 300, OLD + 20),
               _entry(new, "4", 300, OLD + 30)]
    other = new / "not-an-entry.tmp"
    other.write_bytes(b"x" * 5000)
    assert xla_cache.evict(tmp_path, budget=1200) == []  # 1,200 bytes of entries: within the budget
    removed = xla_cache.evict(tmp_path, budget=1000)  # over it: down to 750
    assert removed == entries[:2]
    assert [p.exists() for p in entries] == [False, False, True, True]
    assert other.exists()


def test_a_loaded_program_is_not_compiled_again(tmp_path):
    """Two processes run the same compiled function: the first writes the cache entry, the second loads it (the
    entry is not rewritten) and computes the same numbers."""
    script = textwrap.dedent("""
        import os, sys
        import keras_grs, tensorflow as tf
        assert os.environ["TF_XLA_FLAGS"].startswith("--tf_xla_persistent_cache_directory=" + sys.argv[1])
        f = tf.function(lambda x: tf.reduce_sum(tf.sin(x) * x), jit_compile=True)
        print(repr(float(f(tf.linspace(0.0, 3.0, 7)))))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
    env.update({xla_cache.VARIABLE: str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"})

    def run():
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    first = run()
    entries = list(tmp_path.glob(f"*/{xla_cache.ENTRY_PREFIX}*.pb"))
    assert len(entries) == 1
    os.utime(entries[0], (OLD, OLD))
    assert run() == first
    assert list(tmp_path.glob(f"*/{xla_cache.ENTRY_PREFIX}*.pb")) == entries
    assert entries[0].stat().st_mtime == OLD


def test_no_home_directory_leaves_the_cache_off(environment):
    environment.delenv("XDG_CACHE_HOME", raising=False)

    def homeless():
        raise RuntimeError("Could not determine home directory.")

    environment.setattr(xla_cache.Path, "home", staticmethod(homeless))
    assert xla_cache.root() is None
    assert xla_cache.enable() is None
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"
