"""Typed configs of the binaries (`schema`) and their validation in one place (`checks`).

`schema` holds one frozen dataclass per binary kind (data, train, eval, augment, study,
pretrain) and per shared block (model, mesh, multihost), with the defaults; it imports nothing
of the package (base layer). The ml-collections files in configs/ are the user-facing presets:
they build a ConfigDict from these defaults (`schema.as_config_dict`) and apply their variant's
overrides; a binary turns the parsed ConfigDict into its typed config (`schema.typed`) at its
edge and validates it (`checks.validate_<kind>`). `checks` needs the vocabularies of the
modules it checks against (formats, conditions, metrics, strategies, presets, datasets), so it
sits above them, just below the study and the binaries.
"""
