# Everything a bare machine needs: `make demo` and `make test` create .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt
RUN ?= runs/quickstart

.PHONY: demo test bench quickstart video clean

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

# dev = pytest + the video and ray extras (the tests render videos and run a local Ray sweep). No system
# packages here: the MuJoCo offscreen-rendering test skips itself where EGL does not work.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) -e ".[bench]"
	touch $@

# Main job: closed-loop MPPI on Pendulum-v1 with the true model.
demo: $(VENV)/.installed
	$(BIN)/modelrl plan mppi --env Pendulum-v1 --episodes 3

# One pytest worker per logical CPU (at most 4; pytest-xdist), the slowest tests listed at the end.
test: $(VENV)/.installed-dev
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

clean:
	rm -rf $(VENV) runs .pytest_cache
