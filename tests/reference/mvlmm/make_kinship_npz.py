"""kinship_K.npz: the lower triangle of shared/bench/kinship_K.csv (6 significant digits) as float32, with the
ids; ``load_kinship`` rebuilds the CSV's values exactly (rounding back to 6 significant digits).
usage: python make_kinship_npz.py PATH/TO/shared/bench/kinship_K.csv"""
import sys

import numpy as np
import pandas as pd

K = pd.read_csv(sys.argv[1], index_col=0)
rows, cols = np.tril_indices(K.shape[0])
np.savez_compressed("kinship_K.npz", ids=np.asarray(K.index, dtype=str),
                    lower=K.to_numpy()[rows, cols].astype(np.float32))
