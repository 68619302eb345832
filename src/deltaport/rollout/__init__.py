"""Rollouts: stage a deployment on every device, then activate it wave by wave (issue 14).

:mod:`deltaport.rollout.plan` is the pure part (waves, thresholds, device choice, the
state machine); the database side is in ``deltaport.pipelines.rollouts``.
"""
