"""Model zoo: parameter counts of the standard architectures, shapes, BatchNorm modes, PyTorch twins."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax.models import create_model, feature_dim, last_stage_name

# name -> (input side, input channels): the image size each architecture is meant for.
INPUTS = {'resnet32': (32, 3), 'resnet34_cifar': (32, 3), 'resnet_mini': (28, 1)}

TORCHVISION_COUNTS = {  # torchvision's published parameter counts with 1000 classes
    'resnet10': 5_418_792,  # BasicBlock [1, 1, 1, 1]
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
    'resnext50_32x4d': 25_028_904,
}


def _abstract_variables(name: str, num_classes: int) -> dict:
  side, channels = INPUTS.get(name, (224, 3))
  model = create_model(name, num_classes)
  x = jax.ShapeDtypeStruct((1, side, side, channels), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _torch_models():
  pytest.importorskip('torch')
  path = pathlib.Path(__file__).parents[1] / 'benchmarks' / 'torch_models.py'
  spec = importlib.util.spec_from_file_location('torch_models', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _torch_count(name: str, num_classes: int) -> int:
  channels = INPUTS.get(name, (224, 3))[1]
  model = _torch_models().build_torch_model(name, num_classes, in_channels=channels)
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('name', sorted(TORCHVISION_COUNTS))
def test_param_count_matches_torchvision(name):
  variables = _abstract_variables(name, 1000)
  assert _count(variables['params']) == TORCHVISION_COUNTS[name]
  assert variables['params']['head']['kernel'].shape == (feature_dim(name), 1000)


def test_resnet32_matches_ldam():
  # LDAM's resnet32 (option-A shortcuts) on CIFAR-10: 464,154 parameters.
  assert _count(_abstract_variables('resnet32', 10)['params']) == 464_154


def test_resnet34_cifar_matches_weight_balancing():
  # Weight balancing's ResnetEncoder(34, embDimension=100): torchvision's resnet34 (21,797,672 parameters with
  # 1000 classes) with its 7x7 stem conv (9,408) replaced by a 3x3 one (1,728) and a 100-way fc (51,300 instead
  # of 513,000).
  assert _count(_abstract_variables('resnet34_cifar', 100)['params']) == 21_797_672 - 9_408 + 1_728 - 513_000 + 51_300
  assert _count(_abstract_variables('resnet34_cifar', 1000)['params']) == _torch_count('resnet34_cifar', 1000)


@pytest.mark.parametrize('name', ['resnext101_32x4d', 'resnext152_32x4d', 'resnet32', 'resnet_mini'])
def test_param_count_matches_torch_twin(name):
  assert _count(_abstract_variables(name, 1000)['params']) == _torch_count(name, 1000)


def test_torch_twin_uses_torchvision_keys():
  keys = _torch_models().build_torch_model('resnet50', 10).state_dict().keys()
  for key in [
      'conv1.weight', 'bn1.running_var', 'layer1.0.conv1.weight', 'layer1.0.downsample.0.weight',
      'layer1.0.downsample.1.running_mean', 'layer4.2.bn3.bias', 'fc.weight'
  ]:
    assert key in keys


def test_variable_layout():
  variables = _abstract_variables('resnet50', 7)
  assert set(variables) == {'params', 'batch_stats'}
  assert set(variables['params']) == {'backbone', 'head'}
  assert set(variables['batch_stats']) == {'backbone'}
  backbone = variables['params']['backbone']
  assert {'stem_conv', 'stem_bn', 'stage1', 'stage4'} <= set(backbone)
  assert {'conv1', 'bn1', 'conv3', 'bn3', 'downsample_conv', 'downsample_bn'} <= set(backbone['stage1']['block0'])
  assert backbone['stage1']['block0']['conv2']['kernel'].shape == (3, 3, 64, 64)
  assert last_stage_name('resnet50') == 'stage4'
  assert last_stage_name('resnet32') == 'stage3'
  assert variables['params']['head']['bias'].shape == (7,)


def test_resnext_grouped_conv_shape():
  block = _abstract_variables('resnext50_32x4d', 10)['params']['backbone']['stage1']['block0']
  assert block['conv2']['kernel'].shape == (3, 3, 4, 128)  # 32 groups of 4 channels


def test_feature_dims():
  assert feature_dim('resnet10') == 512
  assert feature_dim('resnext50_32x4d') == 2048
  assert feature_dim('resnet32') == 64
  assert feature_dim('resnet_mini') == 64
  with pytest.raises(ValueError, match='unknown model'):
    feature_dim('vgg16')


def test_forward_and_batchnorm_modes():
  name = 'resnet_mini'
  side, channels = INPUTS[name]
  model = create_model(name, 5)
  x = jax.random.normal(jax.random.key(1), (4, side, side, channels)) * 2.0 + 1.0
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x)

  @jax.jit
  def outputs(variables, x):
    train_out, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    eval_out = model.apply(variables, x, train=False)
    single = model.apply(variables, x[:1], train=False)[0]
    feats = model.apply(variables, x, method='features')
    return train_out, updates, eval_out, single, feats, model.apply(variables, feats, method='classify')

  (logits, z), updates, (eval_logits, eval_z), single, feats, classified = outputs(variables, x)
  assert logits.shape == (4, 5) and logits.dtype == jnp.float32
  assert z.shape == (4, feature_dim(name))
  stem_old = variables['batch_stats']['backbone']['stem_bn']
  stem_new = updates['batch_stats']['backbone']['stem_bn']
  assert not np.allclose(stem_old['mean'], stem_new['mean'])  # train mode updates running stats
  # Eval mode normalises with the running statistics: outputs differ from train mode and do not depend on
  # the rest of the batch.
  assert not np.allclose(eval_logits, logits, atol=1e-3)
  np.testing.assert_allclose(eval_logits[:1], single, rtol=1e-5)
  np.testing.assert_allclose(feats, eval_z, rtol=1e-5)
  np.testing.assert_allclose(classified, eval_logits, rtol=1e-5)


def test_bfloat16_compute_float32_params():
  model = create_model('resnet_mini', 3, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits, z = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.dtype == jnp.float32 and z.dtype == jnp.float32


@pytest.mark.parametrize('name', ['resnet_mini', 'resnet32'])
def test_flax_and_torch_twin_agree(name):
  """With the same weights (mapped as documented in resnet.py) Flax and PyTorch give the same eval logits."""
  torch = pytest.importorskip('torch')
  side, channels = INPUTS[name]
  net = _torch_models().build_torch_model(name, 10, in_channels=channels).eval()
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  rng = np.random.default_rng(0)
  for key in state:  # non-trivial running statistics
    if key.endswith('running_mean'):
      state[key] = rng.normal(size=state[key].shape).astype(np.float32)
    elif key.endswith('running_var'):
      state[key] = rng.uniform(0.5, 2.0, size=state[key].shape).astype(np.float32)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})

  def torch_prefix(path):
    """backbone/stage1/block0/conv1 -> layer1.0.conv1 (the mapping documented in resnet.py)."""
    if path[0] == 'head':
      return 'fc'
    names = {'stem_conv': 'conv1', 'stem_bn': 'bn1', 'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}
    parts = [names.get(p, p.replace('stage', 'layer').replace('block', '')) for p in path[1:]]
    return '.'.join(parts)

  def convert(collection, path, leaf):
    prefix = torch_prefix(path[:-1])
    torch_name = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
                  ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}
    value = state[f'{prefix}.{torch_name[collection, path[-1]]}']
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:
      value = value.T
    assert value.shape == leaf.shape, (path, value.shape, leaf.shape)
    return jnp.asarray(value)

  model = create_model(name, 10)
  x = rng.normal(size=(3, side, side, channels)).astype(np.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  variables = {
      c: jax.tree_util.tree_map_with_path(lambda p, leaf, c=c: convert(c, tuple(k.key for k in p), leaf), tree)
      for c, tree in variables.items()
  }
  logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  with torch.no_grad():
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
