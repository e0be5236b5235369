"""Write the synthetic data of tests/test_population_classes.py as CSVs for lme4_classes.R.

    python tests/reference/population_classes/make_data.py OUTDIR
    Rscript tests/reference/population_classes/lme4_classes.R OUTDIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import test_population_classes as t  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for name, (make, formula, reml, _) in t.CLASSES.items():
    make().to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.txt").write_text(f"{formula}\n{'TRUE' if reml else 'FALSE'}\n")
