"""Stage 2: freeze the representation, re-balance the classifier (the paper's Sec. 4, and its successors).

- `registry`: one record per method (label, paper or not, where it runs, its function); its hyper-parameters are
  config subtree stage2.<name>.
- `features`: the features of each split, extracted once per backbone and cached.
- `on_features`: methods on the cached features (NCM, tau-norm, logit adjustment, and the fast variants of cRT, LWS
  and WB), with `rebalance`, their optax training on features.
- `backbone`: methods through the frozen backbone on augmented images (the reference's cRT and LWS, Table 1's
  variants, WB's and MiSLAS's stage 2), on the stage-1 loop.
- `run`: the driver: every method of config key stage2.methods, reported, plotted and exported alike.
Nothing of stage 1 imports this package; ltr_jax.validate reads only `registry`.
"""
