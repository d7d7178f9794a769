"""Studies: the `Case` (one patient's sequences by role), reading DICOM folders by their
headers (`dicom_roles`), the case JSON + NRRD exchange format (`case_json`) and the one
entry point that accepts any of them (`loading.load_case`)."""
