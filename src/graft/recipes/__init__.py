"""Recipes: one module per capability, each a Config dataclass (:mod:`.settings`) and one
public function that builds its method and hands it to the trainer.

frozen (``fit_frozen``, ``evaluate``), finetune, pretrain, adapt, distill, multitask, lr_find,
fewshot, advise, resume (``graft resume RUN``), demo. The commands that write a run folder are
listed once, in :mod:`.registry`. Shared run plumbing is private (:mod:`._run`,
:mod:`._run_plan`, :mod:`._training`).
"""
