"""Gridworld-pinpad configs (docs/method.md §2.1, §3, §4).

Choose a preset on the command line, override any field:
  python experiments/expert_demo.py --config=configs/gridworld.py:cpu \
      --config.data.batch_size=256
Presets: `paper` (GPU/TPU scale), `gpu` (the paper's setting sized for
minutes per phase on one H200), `cpu` (a 2-core laptop), `cpu5` (the
`cpu` preset on a 5×5 grid without walls, a research preset:
docs/cpu_scale.md), `test` (seconds).
"""

import ml_collections

from irl import optim
from irl.envs import registry
from irl.models import presets as models
from irl.utils import config_utils


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ''
  c.seed = 0

  # The environment's own defaults (irl/envs/registry.py): G = 7, O = 8
  # colours, W = 4 walls, T = 100, the paper's task tables.
  c.env = registry.get('gridworld_pinpad').default_config()

  c.data = ml_collections.ConfigDict()
  c.data.batch_size = 1024
  # Steps recorded per pretraining episode. Expert episodes on 6-colour tasks
  # last ~32 steps (max ~65 with ε = 0.2), so 64 wastes little on padding.
  c.data.seq_len = 64
  c.data.post_seq_len = 100    # the 12-colour post-training task needs ~63
  # D: each episode's expert draws ε from this list (docs/method.md §3 sweeps 0..0.2).
  c.data.epsilons = (0.0, 0.05, 0.1, 0.2)
  # Pretraining rows hold this many whole episodes back to back, attention
  # kept within each (irl/data/stream.py: PackedRollout); the last one is cut
  # at the row's end. 1: one episode per row, padded (the paper's layout).
  c.data.episodes_per_row = 1

  c.model = models.transformer('paper')
  # The paper leaves the encoder open; an egocentric view of the same one-hot
  # observation learns navigation from far less data (irl/models/encoders.py).
  c.model.obs_encoder = 'egocentric_grid'

  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.num_steps = 256_000
  c.pretrain.learning_rate = 3e-4     # AdamW peak rate (docs/method.md: constant)
  # 'constant' | 'cosine' | 'wsd' (irl/optim.py), with these warm-up
  # and final-decay lengths in optimiser steps; every trainer has the three.
  optim.add_schedule_fields(c.pretrain)
  c.pretrain.weight_decay = 0.03
  # λ of −ln p(a_t|o_1:t) − λ ln p(o_t+1|o_1:t); the next observation is a
  # product of Bernoullis over its 637 one-hot values (summed, not averaged).
  c.pretrain.obs_loss_weight = 0.01
  c.pretrain.grad_clip = 1.0          # global-norm clipping; 0 disables
  # Weight of the auxiliary loss of model.future_actions > 0 heads (unused
  # by the paper's model, which has none).
  c.pretrain.future_action_weight = 1.0
  c.pretrain.log_every = 100          # optimiser steps per jitted chunk
  c.pretrain.save_every = 2000        # a multiple of log_every
  # Checkpoints kept on disk; the probes of Fig. 3 read every kept one.
  c.pretrain.keep_checkpoints = 16

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1024            # held-out expert episodes per batch
  c.eval.num_batches = 8
  c.eval.num_episodes = 2048          # closed-loop episodes
  # Sampling temperature of the base model in the closed loop; a preset
  # keeps control.temperature and rl.temperature at the same value, so
  # every method samples the base model alike.
  c.eval.temperature = 1.0

  # Linear subgoal probes, one per residual index l = 0..L (docs/method.md §5).
  c.probe = ml_collections.ConfigDict()
  c.probe.num_steps = 8000            # AdamW steps (all layers at once)
  c.probe.batch_size = 512            # episodes per step
  c.probe.learning_rate = 1e-3
  optim.add_schedule_fields(c.probe)
  c.probe.weight_decay = 0.0
  c.probe.log_every = 500             # steps per jitted chunk
  c.probe.split = 'expert'            # 'expert': D* (ε = 0); 'pretrain': D
  # 0: fresh episodes and a frozen forward in every step; N > 0: residuals of
  # a fixed pool of N episodes, computed once per checkpoint (fast on a CPU).
  c.probe.pool_episodes = 0
  c.probe.eval_episodes = 2048        # held-out episodes (other keys)
  c.probe.eval_batch_size = 256       # episodes per forward when collecting
  c.probe.max_segment_step = 16       # bins of accuracy vs step in a segment
  # Standardise each residual dimension (training-data mean/std) before the
  # probe: the same linear family, comparable optimisation across layers.
  c.probe.standardize = True

  # Ground-truth linear controllers, one per subgoal (docs/method.md §5).
  c.control = ml_collections.ConfigDict()
  c.control.layers = ()               # residual indices to control; () = 0..L
  c.control.rank = 16                 # U = A B^T of rank r; 0 = full rank
  c.control.decoder_hidden = 32       # hypernetwork hidden width (§6.6)
  c.control.num_steps = 3200
  c.control.batch_size = 512          # D* episodes per step
  c.control.learning_rate = 1e-3
  optim.add_schedule_fields(c.control)
  c.control.weight_decay = 0.03
  c.control.log_every = 100
  c.control.num_episodes = 1024       # closed-loop post-task episodes
  c.control.temperature = 1.0         # sampling temperature of the base model
  c.control.eval_batches = 4          # held-out D* batches for the NLL
  # 0: fresh D* episodes in every step; N > 0: a fixed pool of N episodes
  # and their clean stream e_l, computed once per layer (fast on a CPU).
  c.control.pool_episodes = 0
  # Base-model depths of the Fig. 4 heat map; a depth other than model.
  # num_layers is pretrained into <workdir>/depth_<L>/ for
  # depth_pretrain_steps steps (0: pretrain.num_steps).
  c.control.depths = (4, 6, 8)
  c.control.depth_pretrain_steps = 0

  # docs/method.md §6; choices where the paper is silent: irl/models/metacontroller.py.
  c.metacontroller = ml_collections.ConfigDict()
  c.metacontroller.seed = 0             # init and data; config.seed names the base model
  c.metacontroller.layer = -1           # residual index read and written; -1: L // 2
  c.metacontroller.latent_dim = 8       # n_z
  c.metacontroller.embed_dim = 32       # s, from the bidirectional Hawk embedder
  c.metacontroller.embed_width = 64
  c.metacontroller.embed_heads = 4
  c.metacontroller.history_dim = 32     # GRU
  c.metacontroller.encoder_hidden = 64
  c.metacontroller.switch_hidden = 64
  c.metacontroller.switch_bias = 0.0    # β ≈ sigmoid(bias) at init
  c.metacontroller.decoder_hidden = 32  # hypernetwork z -> U
  c.metacontroller.decoder_init_scale = 0.0  # std of B's layer / A's; 0: U = 0 at init
  c.metacontroller.rank = 16            # U = A Bᵀ; 0: full n_e × n_e (the ant)
  c.metacontroller.kl_weight = 0.1      # α
  c.metacontroller.kl_delay = 0         # steps at α = 0 before the ramp
  c.metacontroller.kl_warmup = 0        # steps of a linear ramp of α from 0; 0: constant
  # 'learned' β, or 'always' (β ≡ 1: the no-temporal-abstraction baseline).
  c.metacontroller.switching = 'learned'
  # 'frozen' θ (the method), 'cotrain' (θ from the pretrained model, trained
  # jointly) or 'cotrain_scratch' (θ from a fresh init: docs/method.md §8.4, grid).
  c.metacontroller.base_model = 'frozen'
  c.metacontroller.num_steps = 64_000
  c.metacontroller.batch_size = 512
  c.metacontroller.seq_len = 64         # ε = 0 episodes: median 31, 99% <= 50 steps
  c.metacontroller.learning_rate = 1e-3   # AdamW, constant
  optim.add_schedule_fields(c.metacontroller)
  c.metacontroller.weight_decay = 0.03
  c.metacontroller.grad_clip = 1.0      # global-norm clipping; 0 disables
  c.metacontroller.log_every = 100      # optimiser steps per jitted chunk
  c.metacontroller.save_every = 2000    # a multiple of log_every
  c.metacontroller.keep_checkpoints = 3
  # Held-out segmentation analysis (irl/train/segmentation.py).
  c.metacontroller.switch_threshold = 0.5
  c.metacontroller.boundary_tolerance = 1
  c.metacontroller.eval_episodes = 2048
  c.metacontroller.eval_batch_size = 512
  c.metacontroller.trace_episodes = 8   # episodes in the β-trace figure

  # Fig. 7: α × seeds (vmapped together), per base-model mode.
  c.rate_distortion = ml_collections.ConfigDict()
  c.rate_distortion.kl_weights = (0.0, 0.05, 0.1, 0.17, 0.3, 0.5, 1.0)
  c.rate_distortion.seeds = (0, 1, 2)
  c.rate_distortion.base_models = ('frozen', 'cotrain_scratch')
  c.rate_distortion.num_steps = 0       # 0: metacontroller.num_steps
  c.rate_distortion.runs_per_group = 0  # runs per vmap; 0: all α × seeds at once
  c.rate_distortion.f1_threshold = 0.8  # "switching aligned with subgoals"

  # CompILE baseline (docs/method.md §8.2) in place of the metacontroller, writing
  # the same layer; choices where the paper is silent: irl/models/compile.py.
  c.compile = ml_collections.ConfigDict()
  c.compile.seed = 0
  c.compile.layer = -1                # residual index written; -1: L // 2
  c.compile.max_segments = 4          # at most 4 segments
  c.compile.latent_dim = 8            # n_z
  c.compile.head_hidden = 32          # boundary and latent heads
  c.compile.decoder_hidden = 32       # hypernetwork z -> U
  c.compile.rank = 16                 # U = A Bᵀ; 0: full rank
  c.compile.temperature = 0.5         # Gumbel-softmax β (paper: 0.5 or 1)
  # Poisson mean segment length of the boundary prior (unspecified; expert
  # pairs take ~10 steps); the hazard β starts at 1 / prior_rate.
  c.compile.prior_rate = 10.0
  c.compile.z_kl_weight = 0.1         # α_z (paper: 0.003..1)
  c.compile.b_kl_weight = 0.1         # α_β (paper: 0.003..1)
  c.compile.kl_delay = 0              # as metacontroller.kl_delay, on α_z and α_β
  c.compile.kl_warmup = 0
  # 'scratch': CompILE's own encoder; 'base_model': start from θ's lower half.
  c.compile.encoder_init = 'scratch'
  # Internal RL: 0 lets the causal β switch freely; N > 0 caps at N segments.
  c.compile.rl_max_segments = 0
  c.compile.num_steps = 32_000
  c.compile.batch_size = 512          # unspecified: as the metacontroller
  c.compile.seq_len = 64
  c.compile.learning_rate = 1e-3      # unspecified: as the metacontroller
  optim.add_schedule_fields(c.compile)
  c.compile.weight_decay = 0.03
  c.compile.grad_clip = 1.0
  c.compile.log_every = 100
  c.compile.save_every = 2000
  c.compile.keep_checkpoints = 3
  c.compile.switch_threshold = 0.5    # causal β > threshold counts a switch
  c.compile.boundary_tolerance = 1
  c.compile.eval_episodes = 2048
  c.compile.eval_batch_size = 512
  c.compile.trace_episodes = 8

  # Internal RL and the Fig. 8 baselines on env.post_task (docs/method.md §7-8);
  # choices where the paper is silent: irl/rl/train.py, irl/rl/rollouts.py, irl/rl/internal_env.py.
  c.rl = ml_collections.ConfigDict()
  # 'internal' | 'raw_action' | 'no_temporal_abstraction' | 'cotrained' |
  # 'compile' (experiments/internal_rl.py --method overrides it).
  c.rl.method = 'internal'
  c.rl.seeds = (0, 1, 2)                # vmapped together in one job
  c.rl.num_updates = 100_000
  c.rl.batch_size = 1024                # episodes per update
  c.rl.learning_rate = 3e-5             # AdamW, constant (searched 3e-6..3e-4)
  optim.add_schedule_fields(c.rl)
  c.rl.weight_decay = 0.0
  c.rl.grad_clip = 0.0                  # global-norm clipping; 0 disables
  c.rl.clip_eps = 0.2                   # PPO ratio clip (unspecified)
  c.rl.num_epochs = 1                   # (unspecified)
  c.rl.num_minibatches = 1
  c.rl.entropy_coef = 0.0
  c.rl.advantage_eps = 1e-3             # A = (R - mean R) / (std R + eps)
  c.rl.switch_threshold = 0.5           # the policy acts where β >= this
  # Abstract decisions per episode (static buffers) for methods with a
  # learned gate; an episode needing more ends unsuccessful (truncated).
  # Methods deciding at every raw step use env.max_steps (never truncated).
  c.rl.max_decisions = 32
  c.rl.temperature = 1.0                # base model's action sampling
  c.rl.policy_width = 256               # one Hawk layer (docs/method.md §7)
  c.rl.policy_heads = 4
  c.rl.policy_mlp_dim = 512
  c.rl.init_log_std = 0.0               # initial π = N(0, I), the prior of z
  c.rl.raw_action_params = 'all'        # raw-action RL trains 'all' θ or the 'action_head'
  c.rl.cotrained_base_model = 'cotrain_scratch'   # or 'cotrain' (from θ)
  c.rl.log_every = 100                  # updates per jitted chunk
  c.rl.save_every = 1000                # a multiple of log_every
  c.rl.keep_checkpoints = 2
  c.rl.fig8_methods = ('internal', 'raw_action', 'no_temporal_abstraction',
                       'cotrained', 'compile')

  c.expert_demo = ml_collections.ConfigDict()
  c.expert_demo.num_episodes = 4096
  c.expert_demo.batch_size = 1024
  return c


def _paper() -> ml_collections.ConfigDict:
  c = _base()
  c.preset = 'paper'
  return c


def _cpu() -> ml_collections.ConfigDict:
  c = _base()
  c.preset = 'cpu'
  # Probes and controllers sized for minutes on a 2-core CPU, on fixed pools
  # of expert episodes (probe.pool_episodes, control.pool_episodes).
  c.probe.num_steps = 1000
  c.probe.batch_size = 64
  c.probe.learning_rate = 3e-3        # converged in 1000 steps (paper: 8000)
  c.probe.log_every = 250
  c.probe.pool_episodes = 768
  c.probe.eval_episodes = 512
  c.control.num_steps = 800
  c.control.batch_size = 64
  c.control.log_every = 50
  c.control.num_episodes = 256
  c.control.eval_batches = 2
  c.control.pool_episodes = 2048
  # Depth variants (L = 6, 8) get short pretraining runs (main model: 10,000).
  c.control.depth_pretrain_steps = 1500
  # Switching at the pair boundaries emerges late and abruptly (after
  # 2000-3000 steps; docs/results.md), so fewer steps learn one code only.
  c.metacontroller.num_steps = 4000
  c.metacontroller.batch_size = 64
  c.metacontroller.seq_len = 48         # holds ~97% of ε = 0 episodes whole
  c.metacontroller.embed_width = 32     # the embedder's backward dominates otherwise
  c.metacontroller.log_every = 50
  c.metacontroller.save_every = 250
  c.metacontroller.eval_episodes = 1024
  c.metacontroller.eval_batch_size = 256
  c.rate_distortion.seeds = (0, 1)
  # Sized for minutes on 2 cores.
  c.compile.num_steps = 400
  c.compile.batch_size = 32
  c.compile.seq_len = 48
  c.compile.log_every = 50
  c.compile.save_every = 200
  c.compile.eval_episodes = 512
  c.compile.eval_batch_size = 256
  # Sized for minutes per method on 2 cores, the seeds vmapped: a policy at
  # the cpu model's width, fewer and smaller batches, and so a larger step
  # size than the paper's 3e-5.
  c.rl.num_updates = 150
  c.rl.batch_size = 64
  c.rl.learning_rate = 1e-3
  c.rl.policy_width = 128
  c.rl.policy_mlp_dim = 256
  c.rl.log_every = 10
  c.rl.save_every = 50
  c.model = models.transformer('cpu')
  c.model.obs_encoder = 'egocentric_grid'
  c.data.batch_size = 64
  # Keeps nearly every pretraining episode whole with less padding than 64.
  c.data.seq_len = 48
  # The 20-minute budget, all of it on steps: the closed-loop task structure
  # is the last thing learned and still improves at the end.
  c.pretrain.num_steps = 10_000
  # One episode per row: packing two gives a better base model on which the
  # metacontroller's switches did not align (docs/results.md).
  c.data.episodes_per_row = 1
  # The best rate of a small sweep for a short run (1e-3, 2e-3, 3e-3 and
  # the paper's 3e-4; docs/results.md).
  c.pretrain.learning_rate = 2e-3
  # λ = 0, the low end of the paper's search [0, 0.01]: the observation head
  # costs a sixth of the step and did not help the closed loop.
  c.pretrain.obs_loss_weight = 0.0
  c.pretrain.log_every = 50
  c.pretrain.save_every = 1000        # 10 checkpoints for the probes of Fig. 3
  c.eval.batch_size = 256
  c.eval.num_batches = 4
  c.eval.num_episodes = 1024
  c.expert_demo.num_episodes = 2048
  return c


def _cpu5() -> ml_collections.ConfigDict:
  """The `cpu` preset on a 5×5 grid without walls: a research preset of the
  CPU-scale redesign (docs/cpu_scale.md has every number quoted here)."""
  c = _cpu()
  c.preset = 'cpu5'
  c.env.grid_size = 5
  c.env.num_walls = 0
  # 5×5 episodes: pretraining mean 26 steps (99% <= 45), D* mean 24 (99% <= 39).
  c.data.seq_len = 40
  c.metacontroller.seq_len = 40
  c.compile.seq_len = 40
  # Four pairs, each transition unseen in pretraining (01→23, 23→45, 45→67),
  # longer than every pretraining task.
  c.env.post_task = '0-1-2-3-4-5-6-7'
  # Warmup-stable-decay: the high constant rate finds the task structure,
  # the final linear decay sharpens navigation.
  c.pretrain.num_steps = 12_000
  c.pretrain.lr_schedule = 'wsd'
  c.pretrain.lr_decay_steps = 2500
  # Longer controllers on a larger pool steer the unseen transitions better.
  c.control.num_steps = 3200
  c.control.pool_episodes = 8192
  # A free start: α = 0 for a third of the run, a linear rise over the next
  # third, then the paper's α. Without it the KL closes the posterior before
  # the decoder has learned to use a code; with it the switches fall on the
  # true boundaries. CompILE, its baseline, gets the same third and third.
  # References: an overridden num_steps moves the ramp with it.
  c.metacontroller.num_steps = 6000
  for section in (c.metacontroller, c.compile):
    section.kl_delay = section.get_ref('num_steps') // 3
    section.kl_warmup = section.get_ref('num_steps') // 3
  return c


def _gpu() -> ml_collections.ConfigDict:
  """The paper's 7×7 gridworld and model at accelerator scale, each phase
  sized for minutes on one H200. `benchmarks/gpu_pipeline.sh` runs it under
  a 540 s budget: pretraining (10,000 steps at ~57 steps/s, the number
  below), probes, controllers and the first metacontroller fitted, the other
  phases did not (docs/cpu_scale.md)."""
  c = _base()
  c.preset = 'gpu'
  c.data.batch_size = 512
  # A short run: a higher constant rate than the paper's 3e-4 after a
  # warm-up (the `cpu` preset found 2e-3 best at batch 64).
  c.pretrain.num_steps = 10_000
  c.pretrain.learning_rate = 1e-3
  c.pretrain.lr_warmup_steps = 200
  c.pretrain.save_every = 1000
  c.eval.num_episodes = 1024
  c.eval.num_batches = 4
  # Probes and controllers on fixed pools of residuals (as the `cpu` preset).
  c.probe.num_steps = 1000
  c.probe.batch_size = 256
  c.probe.learning_rate = 3e-3
  c.probe.log_every = 250
  c.probe.pool_episodes = 4096
  c.probe.eval_episodes = 1024
  c.probe.eval_batch_size = 512
  c.control.layers = (0, 3, 6)         # first, L/2, last
  c.control.num_steps = 1600
  c.control.pool_episodes = 16384
  c.control.eval_batches = 2
  c.control.depths = (6,)
  c.metacontroller.num_steps = 3000
  c.metacontroller.batch_size = 128
  c.metacontroller.save_every = 500
  c.metacontroller.eval_episodes = 1024
  c.rate_distortion.seeds = (0, 1)
  c.compile.num_steps = 1000
  c.compile.batch_size = 128
  c.compile.save_every = 500
  c.compile.eval_episodes = 1024
  c.rl.num_updates = 100
  c.rl.batch_size = 256
  c.rl.learning_rate = 1e-3
  c.rl.log_every = 10
  c.rl.save_every = 50
  c.expert_demo.num_episodes = 2048
  return c


def _test() -> ml_collections.ConfigDict:
  c = _base()
  c.preset = 'test'
  c.probe.num_steps = 40
  c.probe.batch_size = 8
  c.probe.log_every = 20
  c.probe.pool_episodes = 32
  c.probe.eval_episodes = 32
  c.probe.eval_batch_size = 8         # = control.batch_size: one sampler
  c.probe.max_segment_step = 8
  c.control.rank = 4
  c.control.decoder_hidden = 8
  c.control.num_steps = 20
  c.control.batch_size = 8
  c.control.log_every = 10
  c.control.num_episodes = 16
  c.control.eval_batches = 1
  c.control.pool_episodes = 32
  c.control.depths = (2,)
  c.control.depth_pretrain_steps = 10
  c.metacontroller.num_steps = 10
  c.metacontroller.batch_size = 8
  c.metacontroller.seq_len = 48
  c.metacontroller.log_every = 5
  c.metacontroller.save_every = 5
  c.metacontroller.embed_dim = 8
  c.metacontroller.embed_width = 16
  c.metacontroller.embed_heads = 2
  c.metacontroller.history_dim = 8
  c.metacontroller.encoder_hidden = 16
  c.metacontroller.switch_hidden = 16
  c.metacontroller.decoder_hidden = 8
  c.metacontroller.rank = 4
  c.metacontroller.eval_episodes = 16
  c.metacontroller.eval_batch_size = 8
  c.metacontroller.trace_episodes = 2
  c.rate_distortion.kl_weights = (0.0, 0.5)
  c.rate_distortion.seeds = (0, 1)
  c.rate_distortion.num_steps = 5
  c.compile.num_steps = 10
  c.compile.batch_size = 8
  c.compile.seq_len = 48
  c.compile.log_every = 5
  c.compile.save_every = 5
  c.compile.head_hidden = 8
  c.compile.decoder_hidden = 8
  c.compile.rank = 4
  c.compile.eval_episodes = 16
  c.compile.eval_batch_size = 8
  c.compile.trace_episodes = 2
  c.rl.seeds = (0, 1)
  c.rl.num_updates = 4
  c.rl.batch_size = 8
  c.rl.learning_rate = 1e-3
  c.rl.max_decisions = 16
  c.rl.policy_width = 16
  c.rl.policy_heads = 2
  c.rl.policy_mlp_dim = 32
  c.rl.log_every = 2
  c.rl.save_every = 2
  c.model = models.transformer('test')
  c.model.obs_encoder = 'egocentric_grid'
  c.data.batch_size = 8
  c.data.seq_len = 48
  c.pretrain.num_steps = 20
  c.pretrain.log_every = 5
  c.pretrain.save_every = 10
  c.eval.batch_size = 16
  c.eval.num_batches = 1
  c.eval.num_episodes = 32
  c.expert_demo.num_episodes = 64
  c.expert_demo.batch_size = 32
  return c


def get_config(preset: str = 'cpu') -> ml_collections.ConfigDict:
  """The named preset; an unknown name raises a ConfigError listing them."""
  return config_utils.select_preset(
      {'paper': _paper, 'cpu': _cpu, 'cpu5': _cpu5, 'gpu': _gpu,
       'test': _test},
      preset or 'cpu')
