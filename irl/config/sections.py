"""The typed config: one frozen dataclass per section, built once.

`irl.config.build` turns the ml_collections config of `configs/` into a
`Config` of these sections, validated (`irl.config.checks`) and with its
defaults resolved. The fields are the config file's; `configs/gridworld.py`
holds the values and says why. A section reads like the ConfigDict it came
from (`s.field`, `s['field']`, `'field' in s`) and is hashable, so jitted
factories are cached on it. The `env` section's type is the environment's
own (`registry.Environment.section`).
"""

from __future__ import annotations

import dataclasses

from irl.utils.config_utils import Section


@dataclasses.dataclass(frozen=True)
class TrainerSection(Section):
  """The optimiser's fields and the chunk length every trainer's section has
  (`irl.optim.validate_trainer` checks them)."""
  learning_rate: float
  log_every: int
  lr_decay_steps: int
  lr_schedule: str
  lr_warmup_steps: int
  weight_decay: float


@dataclasses.dataclass(frozen=True)
class RunSection(TrainerSection):
  """A trainer whose run checkpoints and resumes."""
  grad_clip: float
  keep_checkpoints: int
  save_every: int


@dataclasses.dataclass(frozen=True)
class SegmentingSection(RunSection):
  """What the metacontroller's and CompILE's sections share."""
  batch_size: int
  boundary_tolerance: int
  decoder_hidden: int
  eval_batch_size: int
  eval_episodes: int
  kl_delay: int     # steps at α = 0, then kl_warmup steps of a linear rise
  kl_warmup: int
  latent_dim: int
  layer: int
  rank: int
  seed: int
  seq_len: int
  switch_threshold: float
  trace_episodes: int


@dataclasses.dataclass(frozen=True)
class CompileSection(SegmentingSection):
  """config.compile: CompILE, the Fig. 8 baseline."""
  b_kl_weight: float
  encoder_init: str
  head_hidden: int
  max_segments: int
  num_steps: int
  prior_rate: float
  rl_max_segments: int
  temperature: float
  z_kl_weight: float


@dataclasses.dataclass(frozen=True)
class ControlSection(TrainerSection):
  """config.control: ground-truth controllers and the Fig. 4 sweep."""
  batch_size: int
  decoder_hidden: int
  depth_pretrain_steps: int
  depths: tuple[int, ...]
  eval_batches: int
  layers: tuple[int, ...]
  num_episodes: int
  num_steps: int
  pool_episodes: int
  rank: int
  temperature: float


@dataclasses.dataclass(frozen=True)
class DataSection(Section):
  """config.data: the expert data of pretraining."""
  batch_size: int
  episodes_per_row: int
  epsilons: tuple[float, ...]
  post_seq_len: int
  seq_len: int


@dataclasses.dataclass(frozen=True)
class EvalSection(Section):
  """config.eval: the base model's closed-loop evaluation."""
  batch_size: int
  num_batches: int
  num_episodes: int
  temperature: float


@dataclasses.dataclass(frozen=True)
class ExpertDemoSection(Section):
  """config.expert_demo: the experts' own success rates."""
  batch_size: int
  num_episodes: int


@dataclasses.dataclass(frozen=True)
class ExpertSection(Section):
  """config.expert: the arena expert's Brax PPO (irl/train/arena_expert.py)."""
  batch_size: int
  discounting: float
  entropy_cost: float
  eval_episodes: int
  learning_rate: float
  normalize_observations: bool
  num_envs: int
  num_minibatches: int
  num_timesteps: int
  num_updates_per_batch: int
  progress_weight: float
  reward_scaling: float
  seed: int
  unroll_length: int


@dataclasses.dataclass(frozen=True)
class MetacontrollerSection(SegmentingSection):
  """config.metacontroller: the metacontroller and its variants."""
  base_model: str
  decoder_init_scale: float
  embed_dim: int
  embed_heads: int
  embed_width: int
  encoder_hidden: int
  history_dim: int
  kl_weight: float
  num_steps: int
  switch_bias: float
  switch_hidden: int
  switching: str


@dataclasses.dataclass(frozen=True)
class ModelSection(Section):
  """config.model: the base model."""
  attention_window: int
  attention_window_blocks: tuple[int, ...]
  backbone: str
  conv_width: int
  dtype: str
  future_actions: int
  max_distance: int
  max_len: int
  mlp_dim: int
  num_buckets: int
  num_heads: int
  num_layers: int
  obs_encoder: str
  width: int


@dataclasses.dataclass(frozen=True)
class PretrainSection(RunSection):
  """config.pretrain: the base model's training."""
  future_action_weight: float
  num_steps: int
  obs_loss_weight: float


@dataclasses.dataclass(frozen=True)
class ProbeSection(TrainerSection):
  """config.probe: the linear subgoal probes (Fig. 3)."""
  batch_size: int
  eval_batch_size: int
  eval_episodes: int
  max_segment_step: int
  num_steps: int
  pool_episodes: int
  split: str
  standardize: bool


@dataclasses.dataclass(frozen=True)
class RateDistortionSection(Section):
  """config.rate_distortion: the α sweep of Fig. 7."""
  base_models: tuple[str, ...]
  f1_threshold: float
  kl_weights: tuple[float, ...]
  num_steps: int
  runs_per_group: int
  seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class RlSection(RunSection):
  """config.rl: internal RL and the raw-action baselines."""
  advantage_eps: float
  batch_size: int
  clip_eps: float
  cotrained_base_model: str
  entropy_coef: float
  fig8_methods: tuple[str, ...]
  init_log_std: float
  max_decisions: int
  method: str
  num_epochs: int
  num_minibatches: int
  num_updates: int
  policy_heads: int
  policy_mlp_dim: int
  policy_width: int
  raw_action_params: str
  seeds: tuple[int, ...]
  switch_threshold: float
  temperature: float


SECTIONS: dict[str, type] = {
    'compile': CompileSection, 'control': ControlSection,
    'data': DataSection, 'eval': EvalSection,
    'expert': ExpertSection, 'expert_demo': ExpertDemoSection,
    'metacontroller': MetacontrollerSection, 'model': ModelSection,
    'pretrain': PretrainSection, 'probe': ProbeSection,
    'rate_distortion': RateDistortionSection, 'rl': RlSection,
}


@dataclasses.dataclass(frozen=True)
class Config(Section):
  """The whole typed config. A section the config file leaves out is None
  (and absent from `keys()`); `source` is the config as given (JSON), which
  `irl.config.replace` rebuilds from, so resolved defaults follow a change."""
  env: Section
  preset: str = ''
  seed: int = 0
  compile: CompileSection | None = None
  control: ControlSection | None = None
  data: DataSection | None = None
  eval: EvalSection | None = None
  expert: ExpertSection | None = None
  expert_demo: ExpertDemoSection | None = None
  metacontroller: MetacontrollerSection | None = None
  model: ModelSection | None = None
  pretrain: PretrainSection | None = None
  probe: ProbeSection | None = None
  rate_distortion: RateDistortionSection | None = None
  rl: RlSection | None = None
  source: str = dataclasses.field(default='', compare=False, repr=False,
                                  metadata={'hidden': True})

  def _names(self) -> tuple[str, ...]:
    return tuple(n for n in super()._names() if getattr(self, n) is not None)
