//! The product definition (`recipes/my-agent.toml`): what is built, under
//! which name and into which prefix.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub name: String,
    pub prefix: String,
    pub summary: String,
    pub maintainer: String,
    pub license: String,
    pub homepage: String,
    pub components: Vec<String>,
    /// Service user and group [default: the product name].
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Product {
    pub fn load(path: &Path) -> Result<Product> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read product definition {}", path.display()))?;
        let product: Product = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        product
            .validate()
            .with_context(|| format!("{}: invalid product definition", path.display()))?;
        Ok(product)
    }

    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.name)
    }

    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }

    /// Applies `--name` / `--prefix`.
    pub fn with_overrides(
        mut self,
        name: Option<String>,
        prefix: Option<String>,
    ) -> Result<Product> {
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(prefix) = prefix {
            self.prefix = prefix;
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            bail!(
                "name `{}` must be 1-32 characters of a-z, 0-9, `-` or `_`, starting with a letter \
                 (it becomes a package, user and service name)",
                self.name
            );
        }
        let prefix_ok = self.prefix.starts_with('/')
            && self.prefix.len() > 1
            && !self.prefix.ends_with('/')
            && !self.prefix.split('/').any(|p| p == ".." || p == ".")
            && !self
                .prefix
                .contains(|c: char| c.is_whitespace() || c == '$');
        if !prefix_ok {
            bail!(
                "prefix `{}` must be an absolute path without a trailing slash, `..`, `$` or spaces",
                self.prefix
            );
        }
        if self.components.is_empty() {
            bail!("`components` is empty: nothing to build");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_name_and_prefix() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/my-agent.toml");
        let p = Product::load(&root).unwrap();
        assert_eq!(p.prefix, "/opt/my-agent");
        let p = p
            .with_overrides(Some("db-agent".into()), Some("/opt/db-agent".into()))
            .unwrap();
        assert_eq!(
            (p.name.as_str(), p.prefix.as_str()),
            ("db-agent", "/opt/db-agent")
        );
        let e = p
            .clone()
            .with_overrides(None, Some("opt/x".into()))
            .unwrap_err();
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let e = p.with_overrides(Some("DB Agent".into()), None).unwrap_err();
        assert!(e.to_string().contains("must be 1-32 characters"), "{e}");
    }
}
