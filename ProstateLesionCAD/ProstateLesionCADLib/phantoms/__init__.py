"""Synthetic multiparametric studies with known truth, for tests, demos and training: the
anatomy (`anatomy`), the sequences and their files (`generate`), and DICOM output
(`dicom_writer`)."""
