"""Board profiles (TOML) and their loader."""
