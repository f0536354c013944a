"""The micro model and run every trainer test starts from (a module of its own, not conftest: with several
test directories on one command line, `conftest` names whichever directory's conftest pytest loaded last)."""

MICRO = ["model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.kv_heads=2", "model.context=64",
         "train.batch_size=4", "train.seq_len=64", "train.warmup_steps=2", "train.lr=3e-3",
         "train.eval_tokens=2048", "train.threads=1"]
