"""The config is checked before any work: each fault is one line naming its key, from the command line within
seconds and before any training step; every enum, precondition and path is covered."""
import os
import subprocess
import sys
import time

import pytest

from configs import cifar10_lt_r32, imagenet_lt_rx50, quickstart
from ltr_jax import validate
from ltr_jax.data import kinds
from ltr_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("args, message", [
    (["--config.stage2.methods=('joint','foo')"], "config key stage2.methods: 'foo' is not a stage-2 entry"),
    (["--config.model.name=resnet9000"], "config key model.name = 'resnet9000': not one of the choices; it must be "
     "one of 'resnet10'"),
    (["--config=configs/nope.py"], "--config=configs/nope.py: no such config file"),
])
def test_bad_config_stops_with_one_line_before_any_step(tmp_path, args, message):
  workdir = tmp_path / "workdir"
  config = [] if any(a.startswith("--config=") for a in args) else ["--config=configs/quickstart.py"]
  start = time.time()
  out = subprocess.run([sys.executable, "-m", "ltr_jax.main", *config, f"--workdir={workdir}", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert time.time() - start < 20
  assert out.returncode == 1, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: "), out.stderr[-2000:]
  assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()


def _config(**overrides):
  config = quickstart.get_config()
  for key, value in overrides.items():
    section, name = key.split("__")
    node = config
    for part in section.split("."):
      node = node[part]
    node[name] = value
  return config


@pytest.mark.parametrize("key, value", [
    ("model__name", "vgg16"),
    ("model__dtype", "float16"),
    ("data__kind", "hdf5"),
    ("data__train_transform", "mixup"),
    ("data__eval_transform", "ten_crop"),
    ("train__sampling", "balanced"),
    ("train__loss", "hinge"),
    ("stage2__methods", ("joint", "knn")),
    ("stage2.ncm__metric", "manhattan"),
    ("stage2__methods", ("joint", "backbone_classifier_0.1lr")),
    ("stage2.crt__sampling", "balanced"),
    ("stage2.wb__loss", "hinge"),
    ("stage2.wb__project_every", "batch"),
    ("stage2.lws_cached__lr", 0.0),
    ("stage2.mislas__las_mapping", "cubic"),
    ("stage2__export", ("nope",)),
])
def test_every_enum_is_checked(key, value):
  with pytest.raises(ConfigError, match=rf"config key {key.replace('__', '.')}"):
    validate.validate(_config(**{key: value}))


def test_stage2_and_batch_preconditions():
  validate.validate(quickstart.get_config())  # the quickstart itself is sound
  with pytest.raises(ConfigError, match="stage2.methods: 'tau_norm' chooses a hyper-parameter on a validation split"):
    validate.validate(_config(data__val_per_class=0))
  with pytest.raises(ConfigError, match=r"config key train.batch_size = 0: out of range; it must be an integer >= 1"):
    validate.validate(_config(train__batch_size=0))
  with pytest.raises(ConfigError, match="config key train.epochs = -3: "):  # not a fault of train.drs_epoch
    validate.validate(_config(train__epochs=-3))
  with pytest.raises(ConfigError, match=r"stage2.crt.frozen: pattern 'backbone/nope' matches no parameter"):
    validate.validate(_config(**{"stage2.crt__frozen": ("backbone/nope",)}))
  with pytest.raises(ConfigError,
                     match=r"config key train.ldam_max_m = -1.0: out of range; it must be a finite number >= 0"):
    validate.validate(_config(train__ldam_max_m=-1.0))
  with pytest.raises(ConfigError, match=r"train.frozen: pattern 'backbone/stage9/\.\*' matches no parameter"):
    validate.validate(_config(train__frozen=("backbone/stage9/.*",)))
  with pytest.raises(
      ConfigError, match=r"train.lr_mults = \(\('head/.\*', -1.0\),\): item 0 .* its second item \(-1.0\) is "
      r"out of range"):
    validate.validate(_config(train__lr_mults=(("head/.*", -1.0),)))


def test_batch_sizes_must_divide_over_the_devices():
  code = ("import os; os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'\n"
          "from configs import quickstart; from ltr_jax import validate\n"
          "c = quickstart.get_config(); c.train.batch_size = 12\n"
          "validate.validate(c)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert "config key train.batch_size = 12 must be a multiple of the 8 devices" in out.stderr, out.stderr[-2000:]


def test_data_paths_must_exist(tmp_path):
  config = imagenet_lt_rx50.get_config()
  config.data.update(dict(list_dir=str(tmp_path / "lists"), image_root=str(tmp_path)))
  with pytest.raises(ConfigError, match=r"config key data.list_dir: .*/lists does not exist"):
    validate.validate(config)
  (tmp_path / "lists").mkdir()
  with pytest.raises(ConfigError, match=r"config key data.train_list: .*ImageNet_LT_train.txt does not exist"):
    validate.validate(config)
  for name in ("train", "val", "test"):
    (tmp_path / "lists" / f"ImageNet_LT_{name}.txt").write_text("a.jpg 0\n")
  config.data.image_root = str(tmp_path / "images")
  with pytest.raises(ConfigError, match=r"config key data.image_root: .*/images does not exist"):
    validate.validate(config)
  config.data.image_root = str(tmp_path)
  validate.validate(config)
  config.train.init_from = str(tmp_path / "pretrained")
  with pytest.raises(ConfigError, match=r"config key train.init_from: .*/pretrained is not a directory"):
    validate.validate(config)


@pytest.mark.parametrize("config_module, key, path", [(imagenet_lt_rx50, "image_root", "gs://bucket/images"),
                                                      (imagenet_lt_rx50, "list_dir", "gs://bucket/lists"),
                                                      (imagenet_lt_rx50, "train_list", "gs://bucket/lists/train.txt"),
                                                      (quickstart, "data_dir", "gs://bucket/fm")])
def test_gcs_data_paths_stop_with_the_mount_to_use(config_module, key, path):
  """Images and list files are read with open and Pillow: a gs:// path is refused without any network access, with
  the gcsfuse mount to use instead."""
  config = config_module.get_config()
  config.data[key] = path
  with pytest.raises(ConfigError) as error:
    validate.validate(config)
  rest = path[len("gs://bucket/"):]
  assert str(error.value) == (
      f"config key data.{key}: {path}: ltr_jax reads data.{key} with local file operations; mount the bucket with "
      "gcsfuse (e.g. on Cloud TPU VMs `gcsfuse --implicit-dirs bucket /gcs/bucket`) and pass the local mount path, "
      f"data.{key}=/gcs/bucket/{rest}")


def test_tfds_reads_a_gcs_data_dir_through_gcsfs(monkeypatch):
  """tfds.data_source reads gs:// without TensorFlow where gcsfs is installed (etils.epath's backend; array_record
  reads gs:// itself): checked here against fake-gcs-server, not in this test, which needs no network."""
  config = cifar10_lt_r32.get_config()
  config.data.data_dir = "gs://bucket/tfds"
  monkeypatch.setattr(kinds, "GCS_READERS", ("no_such_module_ltr",))
  with pytest.raises(
      ConfigError, match=r"^config key data\.data_dir: gs://bucket/tfds: TFDS reads gs:// without "
      r"TensorFlow through gcsfs: pip install gcsfs; or mount the bucket with "
      r"gcsfuse"):
    validate.validate(config)
  monkeypatch.setattr(kinds, "GCS_READERS", ("json",))  # as if gcsfs were installed
  validate.validate(config)  # The dataset itself is opened later, by build_splits.


def test_every_config_and_ones_own_load_from_any_working_directory(tmp_path):
  """From a directory outside the repository, with nothing on PYTHONPATH: every config of configs/ by its path, and
  a user's own config beside their data that builds on configs/base.py, load through the command line's parser;
  a config that cannot be imported stops in one line."""
  import glob
  own = tmp_path / "my_data" / "my_config.py"
  own.parent.mkdir()
  own.write_text("from configs import base\n\n\ndef get_config():\n  c = base.get_config()\n"
                 "  c.data.name = 'my_data'\n  return c\n")
  broken = tmp_path / "broken.py"
  broken.write_text("from configs import no_such_config\n\n\ndef get_config():\n  return None\n")
  paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))) + [str(own)]
  paths.remove(os.path.join(ROOT, "configs", "__init__.py"))
  code = ("import sys\n"
          "from absl import flags\n"
          "from ltr_jax import cli\n"
          "cli.define_config_flag()\n"
          "for path in sys.argv[1:]:\n"
          "  flags.FLAGS.unparse_flags()\n"
          "  cli.parse_flags(['main', f'--config={path}'])\n"
          "  print(path, flags.FLAGS.config.data.name or '-')\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  out = subprocess.run([sys.executable, "-c", code, *paths], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  loaded = dict(line.rsplit(" ", 1) for line in out.stdout.strip().splitlines())
  assert list(loaded) == paths and loaded[str(own)] == "my_data"
  assert loaded[os.path.join(ROOT, "configs", "quickstart.py")] == "fashion_mnist_lt"
  out = subprocess.run([sys.executable, "-m", "ltr_jax.main", f"--config={broken}", "--workdir=w"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 1 and out.stderr.strip().splitlines() == [
      f"error: --config={broken}: cannot be loaded (ImportError: cannot import name 'no_such_config' from "
      f"'configs' ({ROOT}/configs/__init__.py))"
  ], out.stderr[-2000:]
