//! Configuration of sipctl (TOML).
