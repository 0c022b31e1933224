"""Ray Tune: schedulers and ASHA rung state, searchers and the Optuna study, checks and
repair of Tune's saved state, and the one reader of a sweep's Tune folder."""
