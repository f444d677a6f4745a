"""emolab's Hydra configs, shipped as a package (`pkg://conf`)."""

import warnings

# conf/hydra/launcher/*.yaml share their names with the launcher plugins' ConfigStore schemas on purpose:
# Hydra 1.3 then checks them against those schemas, and warns in every composing process (the launcher
# and its joblib/submitit workers) that this "automatic schema matching" is deprecated. Our files are
# complete on their own, so nothing breaks when Hydra drops the matching.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema",
                        category=UserWarning)
