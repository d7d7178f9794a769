"""ADC/DWI -> T2 registration (main paper, "Automated sequence registration"): multi-start
BSpline optimisation (`multistart`), the paper's scoring of each start (`scoring`), the
authors' released variant (`released`, preset "released"), the case-level entry points and
transform files (`register`), and the files `register` writes (`outputs`)."""

from .register import apply_to_case, read_transform, register_case, write_transform

__all__ = ["apply_to_case", "read_transform", "register_case", "write_transform"]
