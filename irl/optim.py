"""The optimiser every trainer uses: AdamW with a learning-rate schedule.

The paper trains every phase at a constant rate (docs/method.md §4-7), which stays
the default. A trainer's config section may choose a schedule instead
(`<section>.lr_schedule`), with the peak at `<section>.learning_rate`:

  constant  the peak throughout (linear warm-up first if lr_warmup_steps > 0)
  cosine    warm-up, then a cosine decay from the peak to 0 at the last step
  wsd       warmup-stable-decay: warm-up, the peak, then a linear decay to 0
            over the last lr_decay_steps steps

Schedules count optimiser steps; a schedule other than `constant` depends on
the run's length, so resuming a finished run with more steps restarts part
of its decay (the phases' factories key their compilation on the length then).
"""

from __future__ import annotations

from typing import Any

import optax

from irl.utils.config_utils import (Section, check, check_choice, check_int,
                                    check_range)

SCHEDULES = ('constant', 'cosine', 'wsd')
# The fields `add_schedule_fields` adds to a trainer's section, with their
# defaults: the values checkpoints written before the fields existed trained
# under (irl/utils/checkpoint.py: added_fields).
SCHEDULE_DEFAULTS = {'lr_schedule': 'constant', 'lr_warmup_steps': 0,
                     'lr_decay_steps': 0}
SCHEDULE_FIELDS = tuple(SCHEDULE_DEFAULTS)


def add_schedule_fields(section: Section) -> None:
  """Adds the schedule fields, set to the paper's constant rate."""
  for name, value in SCHEDULE_DEFAULTS.items():
    section[name] = value


def added_fields(section_name: str) -> dict[str, Any]:
  """`{'<section>.lr_schedule': 'constant', ...}` for `Checkpointer`."""
  return {f'{section_name}.{k}': v for k, v in SCHEDULE_DEFAULTS.items()}


def validate_trainer(section: Section, name: str,
                     run_length: str = 'num_steps',
                     total_steps: int | None = None) -> None:
  """Raises ConfigError naming the first bad field of those every trainer's
  section shares: the optimiser's (`learning_rate` > 0, the schedule,
  `weight_decay` and, where present, `grad_clip` >= 0) and the run's cadence
  (`log_every` divides the run length and, where present, `save_every`).

  total_steps: optimiser steps of the run (default: the run length).
  """
  steps = section[run_length]
  check_int(steps, f'{name}.{run_length}', minimum=1)
  check_int(section.log_every, f'{name}.log_every', minimum=1)
  check(steps % section.log_every == 0, f'{name}.{run_length}',
        f'{steps} must be a multiple of {name}.log_every={section.log_every}')
  if 'save_every' in section:
    check_int(section.save_every, f'{name}.save_every', minimum=1)
    check(section.save_every % section.log_every == 0, f'{name}.save_every',
          f'{section.save_every} must be a multiple of {name}.log_every='
          f'{section.log_every}')
  check_range(section.learning_rate, f'{name}.learning_rate', 0.0, None,
              lo_inclusive=False)
  validate_schedule(section, name, steps if total_steps is None
                    else total_steps)
  check_range(section.weight_decay, f'{name}.weight_decay', 0.0)
  if 'grad_clip' in section:
    check_range(section.grad_clip, f'{name}.grad_clip', 0.0)


def validate_schedule(section: Section, name: str, total_steps: int) -> None:
  """Raises ConfigError naming the first bad `<name>.lr_*` field."""
  check_choice(section.lr_schedule, f'{name}.lr_schedule', SCHEDULES)
  check_int(section.lr_warmup_steps, f'{name}.lr_warmup_steps', minimum=0)
  check_int(section.lr_decay_steps, f'{name}.lr_decay_steps', minimum=0)
  check(section.lr_warmup_steps < max(total_steps, 1),
        f'{name}.lr_warmup_steps',
        f'{section.lr_warmup_steps} must be below the run\'s {total_steps} '
        'optimiser steps')
  if section.lr_schedule == 'wsd':
    check(0 < section.lr_decay_steps
          <= total_steps - section.lr_warmup_steps,
          f'{name}.lr_decay_steps',
          f'{section.lr_decay_steps} must be in [1, {total_steps} - '
          f'{name}.lr_warmup_steps] for lr_schedule=\'wsd\'')
  else:
    check(section.lr_decay_steps == 0, f'{name}.lr_decay_steps',
          f'{section.lr_decay_steps} is used by lr_schedule=\'wsd\' only; '
          f'use 0 with lr_schedule={section.lr_schedule!r}')


def schedule(peak: float, kind: str, total_steps: int, warmup_steps: int = 0,
             decay_steps: int = 0) -> optax.Schedule:
  """The learning rate at each optimiser step (see the module docstring)."""
  check_choice(kind, 'lr_schedule', SCHEDULES)
  rest = max(total_steps - warmup_steps, 1)
  bounds = []   # steps after the warm-up where the next part starts
  if kind == 'constant':
    parts = [optax.constant_schedule(peak)]
  elif kind == 'cosine':
    parts = [optax.cosine_decay_schedule(peak, rest)]
  else:
    stable = rest - decay_steps
    parts = [optax.linear_schedule(peak, 0.0, decay_steps)]
    if stable > 0:
      parts, bounds = [optax.constant_schedule(peak)] + parts, [stable]
  if warmup_steps:
    parts = [optax.linear_schedule(0.0, peak, warmup_steps)] + parts
    bounds = [0] + bounds
  bounds = [warmup_steps + b for b in bounds]
  return parts[0] if len(parts) == 1 else optax.join_schedules(parts, bounds)


def make_optimizer(learning_rate: float | optax.Schedule, weight_decay: float,
                   grad_clip: float) -> optax.GradientTransformation:
  """AdamW (docs/method.md §4), with optional global-norm clipping."""
  adamw = optax.adamw(learning_rate, weight_decay=weight_decay)
  if grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
  return adamw


def section_optimizer(section: Section, total_steps: int,
                      grad_clip: float | None = None
                      ) -> optax.GradientTransformation:
  """AdamW of a trainer's section: its learning rate, schedule, weight decay
  and (unless given) grad_clip; `total_steps` optimiser steps in the run."""
  lr = section.learning_rate   # a float: the pre-schedule optimiser exactly
  if section.lr_schedule != 'constant' or section.lr_warmup_steps:
    lr = schedule(lr, section.lr_schedule, total_steps,
                  section.lr_warmup_steps, section.lr_decay_steps)
  clip = section.get('grad_clip', 0.0) if grad_clip is None else grad_clip
  return make_optimizer(lr, section.weight_decay, clip)


def kl_ramp(delay: int, warmup: int) -> optax.Schedule:
  """The multiplier of an information price α at each step: 0 for `delay`
  steps, then a linear rise to 1 over `warmup` steps (a step to 1 when
  `warmup` is 0). Both 0: the constant 1.0, the paper's constant α
  (multiplying by it is exact).

  A free start lets a decoder learn to use its codes before they are priced
  (docs/cpu_scale.md, "A free start lets the codes form").
  """
  if not (delay or warmup):
    return optax.constant_schedule(1.0)
  rise = (optax.linear_schedule(0.0, 1.0, warmup) if warmup
          else optax.constant_schedule(1.0))
  return optax.join_schedules([optax.constant_schedule(0.0), rise], [delay])


def check_kl_ramp(section: Section, name: str) -> None:
  """Raises ConfigError unless `<name>.kl_delay` and `kl_warmup` are ints
  >= 0 whose sum fits the run, so it ends on the objective it names."""
  check_int(section.kl_delay, f'{name}.kl_delay', minimum=0)
  check_int(section.kl_warmup, f'{name}.kl_warmup', minimum=0)
  ramp = section.kl_delay + section.kl_warmup
  check(ramp <= section.num_steps, f'{name}.kl_warmup',
        f'kl_delay + kl_warmup = {ramp} must be <= {name}.num_steps='
        f'{section.num_steps}')


def run_length_matters(section: Section) -> bool:
  """Whether the optimiser depends on the run's length (factories that share
  compilations across run lengths must then keep it in their key)."""
  return section.lr_schedule != 'constant'


def run_length(section: Section, name: str,
               field: str = 'num_steps') -> list[str]:
  """`['<name>.<field>']`, the run's length, for a factory's cache key to
  leave out (`irl.config.factory_key(zero=...)`) unless the schedule
  depends on it: runs of any length then share one compilation."""
  return [] if run_length_matters(section) else [f'{name}.{field}']
