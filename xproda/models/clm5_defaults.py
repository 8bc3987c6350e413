"""CLM5 default parameters of the CENTURY cascade, stored as constants with provenance.

Values were read once from ``clm5_params.c171117.nc`` (CTSM parameter file shipped in
``../shared/data/clm5/``; the test ``tests/test_clm5_defaults.py`` re-reads the file and checks
these numbers) and cross-checked against the hard-coded values in CTSM
``SoilBiogeochemDecompCascadeBGCMod.F90`` / ``SoilBiogeochemLittVertTranspMod.F90`` (spec §2.3).
Where CTSM overrides the file (turnover times, diffusivities) the exact rational CTSM value is
stored; the float32 file value agrees to < 1e-7 relative.

PRODA's default mode referred to ``clm5_params.c190829.nc``; the decomposition cascade values are
identical in c171117 (the PRODA comments quote the same numbers).
"""

from __future__ import annotations

import torch

__all__ = ["CLM5_DEFAULTS", "PROVENANCE", "sand_dependent_fractions"]

SECONDS_PER_YEAR = 86400.0 * 365.0

#: default physical values keyed by PRODA parameter name (units of the ParameterSpace)
CLM5_DEFAULTS: dict[str, float] = {
    "diffus": 1e-4,  # m2 yr-1; file som_diffus = 3.1709792e-12 m2 s-1 (= 1e-4 / (86400*365))
    "cryo": 5e-4,  # m2 yr-1; file cryoturb_diffusion_k = 1.5854896e-11 m2 s-1
    "q10": 1.5,  # file q10_hr
    "froz_q10": 1.5,  # file froz_q10
    "efolding": 10.0,  # m; file decomp_depth_efolding (outside the PRODA prior [0, 1])
    "taucwd": 1.0 / 0.3,  # yr; file tau_cwd = 3.33333325
    "taul1": 1.0 / 18.5,  # yr; file tau_l1 = 0.05405406
    "taul2": 1.0 / 4.9,  # yr; file tau_l2_l3 = 0.20408162
    "tau4s1": 1.0 / 7.3,  # yr; file tau_s1 = 0.1369863
    "tau4s2": 1.0 / 0.2,  # yr; file tau_s2 = 5
    "tau4s3": 1.0 / 0.0045,  # yr; file tau_s3 = 222.222229
    "fl1s1": 1.0 - 0.55,  # 1 - rf_l1s1_bgc
    "fl2s1": 1.0 - 0.5,  # 1 - rf_l2s1_bgc
    "fl3s2": 1.0 - 0.5,  # 1 - rf_l3s2_bgc
    "fs2s1": (0.42 / 0.45) * (1.0 - 0.55),  # CTSM f_s2s1 = 0.42/0.45 times (1 - rf_s2s1_bgc)
    "fs2s3": (0.03 / 0.45) * (1.0 - 0.55),  # CTSM f_s2s3 = 0.03/0.45 times (1 - rf_s2s3_bgc)
    "fs3s1": 1.0 - 0.55,  # 1 - rf_s3s1_bgc
    "fcwdl2": 1.0 - 0.24,  # 1 - cwd_flig (= cwd_fcel 0.76)
    "w-scaling": 1.0,  # CLM's W_SCALAR used unscaled
    "beta": 0.95,  # PRODA default-mode beta (used only with input_profile="beta")
}

#: where each default comes from: (variable in clm5_params.c171117.nc, file units, note)
PROVENANCE: dict[str, tuple[str, str, str]] = {
    "diffus": ("som_diffus", "m2 s-1", "CTSM hard-codes 1e-4/(86400*365)"),
    "cryo": ("cryoturb_diffusion_k", "m2 s-1", "CTSM hard-codes 5e-4/(86400*365)"),
    "q10": ("q10_hr", "1", ""),
    "froz_q10": ("froz_q10", "1", ""),
    "efolding": ("decomp_depth_efolding", "m", ""),
    "taucwd": ("tau_cwd", "yr", "CTSM hard-codes 1/0.3"),
    "taul1": ("tau_l1", "yr", "CTSM hard-codes 1/18.5"),
    "taul2": ("tau_l2_l3", "yr", "CTSM hard-codes 1/4.9"),
    "tau4s1": ("tau_s1", "yr", "CTSM hard-codes 1/7.3"),
    "tau4s2": ("tau_s2", "yr", "CTSM hard-codes 1/0.2"),
    "tau4s3": ("tau_s3", "yr", "CTSM hard-codes 1/0.0045"),
    "fl1s1": ("rf_l1s1_bgc", "1", "1 - value"),
    "fl2s1": ("rf_l2s1_bgc", "1", "1 - value"),
    "fl3s2": ("rf_l3s2_bgc", "1", "1 - value"),
    "fs2s1": ("rf_s2s1_bgc", "1", "(1 - value) * 0.42/0.45 (CTSM f_s2s1)"),
    "fs2s3": ("rf_s2s3_bgc", "1", "(1 - value) * 0.03/0.45 (CTSM f_s2s3)"),
    "fs3s1": ("rf_s3s1_bgc", "1", "1 - value"),
    "fcwdl2": ("cwd_flig", "1", "1 - value"),
}

SOURCE_FILE = "clm5_params.c171117.nc"


def sand_dependent_fractions(cellsand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLM5 sand-dependent S1 transfer fractions (``init_decompcascade_bgc``), spec §2.4.

    ``t = 0.85 - 0.68 * 0.01 * (100 - sand)``; ``fs1s2 = 1 - t - 0.004``; ``fs1s3 = 0.004``.

    Parameters
    ----------
    cellsand : Tensor
        Sand content (%), ``[n, 20]`` (clipped to [0, 100]).

    Returns
    -------
    fs1s2, fs1s3 : Tensor
        ``[n, 20]`` each.
    """
    sand = torch.clamp(cellsand, 0.0, 100.0)
    t = 0.85 - 0.68 * 0.01 * (100.0 - sand)
    fs1s2 = (1.0 - t) * (1.0 - 0.004 / (1.0 - t))
    fs1s3 = (1.0 - t) * (0.004 / (1.0 - t))
    return fs1s2, fs1s3
