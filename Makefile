# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv when missing and install the package with the pinned versions of constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3  # TensorFlow's C++ log lines: see keras_grs/__init__.py
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test install c-toolchains postgres-server bench bench-c bench-armv6 bench-search bench-tables bench-memory bench-overhead bench-unseen bench-calibration bench-architectures bench-faults bench-soak clean

install: $(STAMP)

# The C backend's tests compile with gcc and clang and run ARMv6 (Raspberry Pi Zero) builds under qemu.
C_TOOLS := arm-linux-gnueabi-gcc qemu-arm clang make gcc file
c-toolchains:
	@missing=""; for tool in $(C_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gcc-arm-linux-gnueabi qemu-user clang make gcc file >/dev/null; \
	fi

# The tests of several Optuna workers on one PostgreSQL study start a throwaway cluster with the server's binaries.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -x "$$(pg_config --bindir 2>/dev/null)/initdb" ] || { \
		echo "installing Debian's PostgreSQL server"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,postgres]"
	touch $(STAMP)

demo: $(STAMP) c-toolchains
	$(PY) -m keras_grs demo

# Test files run on up to four processes (each file's tests stay in one, so its fixtures are built once): the
# suite is mostly single-threaded Python and small TensorFlow graphs, so two cores finish it in about half the time.
test: $(STAMP) c-toolchains postgres-server
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=25

# Benchmarks are run by hand, never as tests; results go to benchmarks/results/.
bench-c: $(STAMP) c-toolchains
	$(PY) benchmarks/c_latency.py

# Instructions per MAC on the Pi Zero's ARM1176, counted under qemu-arm (see docs/c_backend.md).
bench-armv6: $(STAMP) c-toolchains
	$(PY) benchmarks/c_armv6.py

# Fits the Pi Zero latency model (keras_grs/latency_pi_zero.json) to the ARMv6 meter and reports its error.
.PHONY: bench-latency
bench-latency: $(STAMP) c-toolchains
	$(PY) benchmarks/latency_model.py

bench-search: $(STAMP)
	$(PY) benchmarks/search_speed.py

bench-tables: $(STAMP)
	$(PY) benchmarks/seed_tables.py $(TABLES_ARGS)

bench-memory: $(STAMP)
	$(PY) benchmarks/memory.py

bench-overhead: $(STAMP)
	$(PY) benchmarks/overhead.py --compare --repeats 2

# the tolerance on unseen data: the seed's acceptance rule against the guard (continues its store)
bench-unseen: $(STAMP)
	$(PY) benchmarks/unseen_accuracy.py $(UNSEEN_ARGS)

# the simulator's difficulty: nn1, logistic regression and a 3x2x1 MLP on each recording
bench-calibration: $(STAMP)
	$(PY) benchmarks/calibration.py

# every convolutional model of keras.applications: analyze, shrink, compare with the silenced parent
bench-architectures: $(STAMP)
	$(PY) benchmarks/architectures.py

# SIGKILL at every stage of prune, resumed until finished: lost trials, corrupt files, tracebacks (FAULTS_ARGS)
bench-faults: $(STAMP) c-toolchains
	$(PY) benchmarks/faults.py $(FAULTS_ARGS)

# 1,000 trials by 3 Optuna workers on one SQLite study, one SIGKILLed and restarted: repeats, lost trials, RSS (SOAK_ARGS)
bench-soak: $(STAMP)
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

bench: bench-c bench-armv6 bench-latency bench-search bench-tables bench-memory bench-overhead bench-unseen bench-calibration bench-architectures bench-faults bench-soak

clean:
	rm -rf $(VENV) build *.egg-info
