"""The expert demo: success rates of the data-generating experts, and a figure."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from irl import config as config_lib
from irl.analysis import figures
from irl.config import Config
from irl.data import stream
from irl.envs import registry
from irl.envs import tasks as tasks_lib
from irl.utils import config_utils
from irl.utils import parallel
from irl.utils import progress as progress_lib


def run_expert_demo(config: Config, workdir: str) -> dict:
  """Rolls out the experts of every data split; returns and writes the rates."""
  config = config_lib.build(config)
  d = config.expert_demo
  os.makedirs(workdir, exist_ok=True)
  batches = max(1, d.num_episodes // d.batch_size)
  env = registry.from_config(config)
  params = config_lib.env_params(config)
  post = config_lib.env_params(config, post=True)
  splits = {
      'pretrain_eps0': (params, params.max_steps, (0.0,)),
      'pretrain_mix': (params, params.max_steps, tuple(config.data.epsilons)),
      'post_eps0': (post, post.max_steps, (0.0,)),
  }
  key = jax.random.key(config.seed)
  results, example = {}, None
  with progress_lib.Progress(batches * len(splits), desc='expert demo') as bar:
    done = 0
    for name, (p, seq_len, eps) in splits.items():
      sample = stream.make_expert_stream(env, p, d.batch_size, seq_len, eps)
      success, length = [], []
      for _ in range(batches):
        key, sub = jax.random.split(key)
        batch = parallel.to_host(sample(sub))
        success.append(batch.success)
        length.append(batch.length)
        done += 1
        bar.update(done, {'split': name, 'success': float(batch.success.mean())})
      success, length = np.concatenate(success), np.concatenate(length)
      results[name] = {
          'episodes': int(success.size), 'success': float(success.mean()),
          'mean_length': float(length.mean()), 'max_length': int(length.max()),
          'epsilons': list(eps), 'seq_len': seq_len}
      if name == 'post_eps0':
        example = batch
  for name, r in results.items():
    line = (f'{name:>14}: success {r["success"]:.4f} over {r["episodes"]} '
            f'episodes (ε in {r["epsilons"]}), mean length '
            f'{r["mean_length"]:.1f}, max {r["max_length"]}')
    print(line)

  i = int(np.argmax(example.success))  # a successful episode if there is one
  n = int(example.length[i])
  task = tasks_lib.format_task(post.tasks[0])
  titles = [f't={t} pair {example.subgoal[i, t]}' for t in range(n)]
  png = figures.episode_strip(
      os.path.join(workdir, 'expert_episode.png'), example.obs[i, :n], env,
      post, titles, suptitle=f'expert on the post-training task {task} '
      f'({"success" if example.success[i] else "failure"} in {n} steps)')
  results['figure'] = png
  path = os.path.join(workdir, 'expert_demo.json')
  with config_utils.open_output(path) as f:
    json.dump(results, f, indent=2)
  print(f'wrote {png} and {path}')
  return results
