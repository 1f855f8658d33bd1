"""Config schema and loading (YAML with ``_BASE_``, ``KEY VALUE`` overrides, typed checks)."""
from .loader import (CfgNode, ConfigError, all_keys, get_default_config, load_config, merge_overrides,
                     parse_override_value, stage_flags)
from .schema import SCHEMA, Key

__all__ = ["CfgNode", "ConfigError", "Key", "SCHEMA", "all_keys", "get_default_config", "load_config",
           "merge_overrides", "parse_override_value",
           "stage_flags"]
