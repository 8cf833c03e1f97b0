"""The error surface a new user meets: every bad input to an entry point ends
with a short message naming the field (and what it may be), a non-zero exit
status, and an untouched workdir."""

import concurrent.futures
import os
import re
import subprocess
import sys


from irl import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = '--config=configs/gridworld.py:test'

# (entry point, flags, a pattern the message must match).
CASES = {
    'unknown field': ('pretrain', [TEST, '--config.pretrain.num_step=5'],
                      r'config\.pretrain\.num_step is not a field: did you '
                      r'mean config\.pretrain\.num_steps\?'),
    'unknown section': ('pretrain', [TEST, '--config.modle.width=8'],
                        r'config\.modle is not a field: did you mean '
                        r'config\.model\?'),
    'unknown preset': ('pretrain', ['--config=configs/gridworld.py:tpu'],
                       r"unknown config preset 'tpu'; known presets: "
                       r"\['cpu', 'cpu5', 'gpu', 'paper', 'test'\]"),
    'no config file': ('pretrain', ['--config=configs/nope.py:cpu'],
                       r'--config=configs/nope\.py:cpu names no readable '
                       'config file'),
    'not an integer': ('pretrain', [TEST, '--config.pretrain.num_steps=abc'],
                       r'--config\.pretrain\.num_steps=abc'),
    'zero steps': ('pretrain', [TEST, '--config.pretrain.num_steps=0'],
                   r'config\.pretrain\.num_steps=0 is invalid: must be an '
                   r'integer >= 1'),
    'bad choice': ('pretrain', [TEST, '--config.model.backbone=lstm'],
                   r"config\.model\.backbone='lstm'.*'transformer', 'hawk'"),
    'bad schedule': ('pretrain', [TEST, '--config.pretrain.lr_schedule=linear'],
                     r"config\.pretrain\.lr_schedule='linear'.*'constant', "
                     r"'cosine', 'wsd'"),
    'bad post task': ('pretrain', [TEST, '--config.env.post_task=abc'],
                      r"config\.env\.post_task='abc' is invalid"),
    'bad colour': ('pretrain', [TEST, "--config.env.pretrain_tasks=('0-9',)"],
                   r'config\.env\.pretrain_tasks\[0\].*\[0, 7\]'),
    'heads do not divide': ('pretrain', [TEST, '--config.model.num_heads=3'],
                            r'config\.model\.num_heads.*must divide'),
    'bad switching': ('train_metacontroller',
                      [TEST, '--config.metacontroller.switching=sometimes'],
                      r"config\.metacontroller\.switching='sometimes'.*"
                      r"'learned', 'always'"),
    'bad phase': ('reproduce', [TEST, '--phases=pretrain,train'],
                  r"--phases lists 'train'.*pretrain,probes"),
    'bad method': ('internal_rl', [TEST, '--method=ppo'],
                   r'--method=ppo: value should be one of <internal\|'),
    'empty workdir flag': ('pretrain', [TEST, '--workdir='],
                           r'--workdir must name a folder'),
    'missing inputs': ('fig8', [TEST],
                       r'no pretrained base model.*run `python experiments/'
                       r'pretrain\.py --config=configs/gridworld\.py:test'),
}


def _run(name, tmp_path):
  script, args, _ = CASES[name]
  workdir = tmp_path / re.sub(r'\W', '_', name)
  workdir.mkdir()
  if not any(a.startswith('--workdir') for a in args):
    args = args + [f'--workdir={workdir}']
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, os.path.join('experiments', f'{script}.py')] + args,
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  return proc, workdir


def test_every_bad_input_gives_a_short_message_and_leaves_the_workdir(
    tmp_path):
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = dict(zip(CASES, pool.map(lambda n: _run(n, tmp_path), CASES)))
  for name, (proc, workdir) in results.items():
    # absl's log lines (I/W...) are progress, not the message.
    message = [l for l in proc.stderr.splitlines()
               if l.strip() and not re.match(r'[IWE]\d{4} ', l)]
    assert proc.returncode != 0, name
    assert 1 <= len(message) <= 2, (name, proc.stderr[-2000:])
    assert re.search(CASES[name][2], message[0]), (name, message)
    assert not os.listdir(workdir), (name, os.listdir(workdir))


def test_unknown_field_lists_the_fields_of_its_section():
  argv = ['prog', TEST, '--config.probe.nm_steps=3']
  message = cli.unknown_field(argv)
  assert message.startswith('config.probe.nm_steps is not a field: did you '
                            'mean config.probe.num_steps?')
  assert 'learning_rate' in message
  assert cli.unknown_field(['prog', TEST, '--config.probe.num_steps=3']) is None
