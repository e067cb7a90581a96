# Everything a bare machine needs: `make demo` and `make test` create .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
RUN ?= runs/quickstart

.PHONY: demo test bench quickstart video clean device-check device-wheels gpu-check

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

# Offscreen OpenGL for MuJoCo videos: EGL (Mesa renders in software, no GPU needed), OSMesa as the fallback
# (MUJOCO_GL=osmesa). apt-get runs only where EGL does not work yet and we are root on Debian/Ubuntu.
EGL_PROBE := MUJOCO_GL=egl PYOPENGL_PLATFORM=egl $(BIN)/python -c \
	"from mujoco.egl import GLContext; c = GLContext(64, 64); c.make_current(); c.free()"
GL_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6

$(VENV)/.installed-gl: $(VENV)/.installed
	@if $(EGL_PROBE) >/dev/null 2>&1; then echo "EGL offscreen rendering works"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(GL_PACKAGES)) \
		|| echo "apt-get failed: install $(GL_PACKAGES) for MuJoCo videos"; \
	else echo "EGL does not work here: install $(GL_PACKAGES) for MuJoCo videos (then MUJOCO_GL=egl or osmesa)"; fi
	touch $@

$(VENV)/.installed-video: $(VENV)/.installed $(VENV)/.installed-gl
	$(PIP) -e ".[video]"
	touch $@

# dev = pytest, ruff and mypy (pinned) + the video and ray extras (the tests render videos and run a local Ray
# sweep). No system packages here: the MuJoCo offscreen-rendering test skips itself where EGL does not work.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) -e ".[bench]"
	touch $@

# Main job, model-based RL from scratch (about 30 s of CPU): the v1.5 agent (an MLP dynamics model refit after every
# episode, MPPI with 300 samples through it) learns the pendulum swing-up in 800 env steps and prints one row per
# evaluation (random at step 200, swung up and held from 600); then the same MPPI on the true model, for comparison.
demo: $(VENV)/.installed
	$(BIN)/modelrl train mpc --env Pendulum-v1 --preset v1.5 --steps 800 --eval-every 200 --eval-episodes 3
	$(BIN)/modelrl plan mppi --env Pendulum-v1 --episodes 3 --num-samples 300

# Lint (ruff) and type check (mypy; what it checks: [tool.mypy] in pyproject.toml) the whole tree, then the tests:
# one pytest worker per logical CPU (at most 4; pytest-xdist), the slowest tests listed at the end.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n logical --maxprocesses=4 --durations=15

# From zero to a trained agent, its learning curve and a video (README, "From zero to a trained agent").
quickstart: $(VENV)/.installed-video
	$(BIN)/modelrl train mpc --env Pendulum-v1 --preset v1.5 --steps 800 --eval-every 200 --eval-episodes 3 \
		--out $(RUN)
	$(BIN)/modelrl plot $(RUN)
	$(BIN)/modelrl eval $(RUN) --episodes 3 --video

# Videos of a trained run (RUN=runs/...; trains the quick-start run first when RUN has no checkpoint).
video: $(VENV)/.installed-video
	if [ -f $(RUN)/checkpoints/latest.pt ]; then $(BIN)/modelrl eval $(RUN) --episodes 1 --video; \
	else $(MAKE) quickstart RUN=$(RUN); fi

# Planner benchmark against pytorch-mppi (writes benchmarks/results/planners.json).
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks.planners

# Every algorithm a few hundred steps on CUDA and on the CPU (docs/benchmarks.md, "Device check"). Runs on
# $(PY)'s own torch (a CUDA build on a GPU machine), not the venv's CPU wheel; gymnasium and mujoco are installed
# into it when missing, from WHEELS=<dir> where the machine cannot reach PyPI (`make device-wheels` fills .whl/).
WHEELS ?=
device-check:
	@$(PY) -c "import gymnasium, mujoco" 2>/dev/null || $(PY) -m pip install -q \
		$(if $(WHEELS),--no-index --find-links $(WHEELS)) "gymnasium>=1.0" "mujoco==3.17.0"
	PYTHONPATH=. $(PY) -m benchmarks.device_check $(ARGS)

# On a GPU machine, in one go: the gpu-marked tests (CUDA runs resume exactly, load on the CPU, learn), then the
# device check, its table written into docs/benchmarks.md (ARGS="--compile" adds the compiled variants: minutes more).
gpu-check:
	@$(PY) -c "import gymnasium, mujoco" 2>/dev/null || $(PY) -m pip install -q \
		$(if $(WHEELS),--no-index --find-links $(WHEELS)) "gymnasium>=1.0" "mujoco==3.17.0"
	PYTHONPATH=. $(PY) -m pytest -m gpu -p no:cacheprovider tests/test_device.py
	PYTHONPATH=. $(PY) -m benchmarks.device_check --docs $(ARGS)

# The wheels device-check needs on a GPU machine without internet (Python 3.12, x86-64), into .whl/
device-wheels:
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d .whl \
		gymnasium==1.4.0 mujoco==3.17.0 farama-notifications==0.0.6 glfw==2.11.0 pyopengl==3.1.10

clean:
	rm -rf $(VENV) runs .pytest_cache
