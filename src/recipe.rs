//! Recipes: which images (and later wheels and plugins) make up a Dify release. The
//! recipes in `manifests/` are compiled into the binary; users may bring their own.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reference::ImageRef;

/// The images a Dify deployment runs, by the role a recipe gives each. A recipe may name
/// other images too; these four are the ones the build derives and the stack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Api,
    Web,
    Sandbox,
    PluginDaemon,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Web, Role::Sandbox, Role::PluginDaemon];

    /// The role's name in recipes, bundle.json, tags and repository names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Web => "web",
            Role::Sandbox => "sandbox",
            Role::PluginDaemon => "plugin-daemon",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Built-in recipes, oldest first; the last is the default.
const BUILTIN: &[&str] = &[
    include_str!("../manifests/dify-1.13.3.toml"),
    include_str!("../manifests/dify-1.17.1.toml"),
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub dify_version: String,
    pub images: Vec<RecipeImage>,
    /// Python packages baked into the sandbox image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxPackages>,
    /// Dify plugins from the marketplace, at pinned versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<RecipePlugin>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipePlugin {
    /// `author/name`, e.g. `langgenius/bedrock`.
    pub id: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SandboxPackages {
    /// requirements.txt lines: names, pins, markers.
    pub requirements: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipeImage {
    /// What the image does in Dify: `api`, `web`, `sandbox`, `plugin-daemon`, or an extra.
    pub role: String,
    /// Where to pull it from: a tag or digest reference.
    pub image: String,
}

impl RecipeImage {
    pub fn reference(&self) -> Result<ImageRef> {
        self.image.parse()
    }
}

/// Checks a bundle name or version as it appears in file names (`NAME.part001.tar`), S3
/// keys (`bundles/NAME/`) and the signature's trusted comment: 1 to 100 ASCII letters,
/// digits, `.`, `_`, `-` and `+`, not starting with `.` or `-`. So no path separator,
/// whitespace or control character, and never `..` or a hidden file.
pub fn check_name(field: &str, value: &str) -> std::result::Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 100
        && !value.starts_with(['.', '-'])
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field} `{}` must be 1 to 100 letters, digits, `.`, `_`, `-` or `+`, not starting \
             with `.` or `-` (it names files, S3 keys and the signature)",
            crate::units::escape(value)
        ))
    }
}

impl Recipe {
    /// Parses and checks a recipe; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Recipe> {
        let recipe: Recipe =
            toml::from_str(text).map_err(|e| Error::invalid(format!("recipe {origin}: {e}")))?;
        recipe.check(origin)?;
        Ok(recipe)
    }

    pub fn load(path: &Path) -> Result<Recipe> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Recipe::parse(&text, &path.display().to_string())
    }

    fn check(&self, origin: &str) -> Result<()> {
        let bad = |why: String| Err(Error::invalid(format!("recipe {origin}: {why}")));
        check_name("name", &self.name)
            .map_err(|e| Error::invalid(format!("recipe {origin}: {e}")))?;
        check_name("dify_version", &self.dify_version)
            .map_err(|e| Error::invalid(format!("recipe {origin}: {e}")))?;
        if self.images.is_empty() {
            return bad("lists no images".into());
        }
        let mut roles = std::collections::HashSet::new();
        for image in &self.images {
            let valid_role = !image.role.is_empty()
                && image
                    .role
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_role {
                return bad(format!(
                    "role `{}` must be lowercase letters, digits and `-`",
                    image.role
                ));
            }
            if !roles.insert(image.role.as_str()) {
                return bad(format!("role `{}` appears twice", image.role));
            }
            if let Err(e) = image.reference() {
                return bad(e.to_string());
            }
        }
        for plugin in &self.plugins {
            let parts: Vec<&str> = plugin.id.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) || plugin.version.is_empty() {
                return bad(format!(
                    "plugin `{}` {}: expected id = \"AUTHOR/NAME\" and a version",
                    plugin.id, plugin.version
                ));
            }
        }
        Ok(())
    }

    /// Every built-in recipe, oldest first.
    pub fn builtin_all() -> Result<Vec<Recipe>> {
        BUILTIN
            .iter()
            .map(|text| Recipe::parse(text, "(built in)"))
            .collect()
    }

    /// The built-in recipe for a Dify version, or the newest when `None`.
    pub fn builtin(version: Option<&str>) -> Result<Recipe> {
        let all = Recipe::builtin_all()?;
        let known: Vec<String> = all.iter().map(|r| r.dify_version.clone()).collect();
        match version {
            None => all
                .into_iter()
                .last()
                .ok_or_else(|| Error::invalid("no built-in recipes")),
            Some(v) => all
                .into_iter()
                .find(|r| r.dify_version == v.trim_start_matches('v'))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "no built-in recipe for Dify {v}; known versions: {}",
                        known.join(", ")
                    ))
                    .with_hint("pass --recipe FILE for another version")
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipes_parse_and_pin_the_core_images() {
        let all = Recipe::builtin_all().unwrap();
        assert!(all.len() >= 2);
        for recipe in &all {
            let roles: Vec<&str> = recipe.images.iter().map(|i| i.role.as_str()).collect();
            for role in Role::ALL {
                assert!(
                    roles.contains(&role.as_str()),
                    "{} lacks {role}",
                    recipe.name
                );
            }
            for image in &recipe.images {
                let r = image.reference().unwrap();
                assert!(r.tag.is_some() && r.tag.as_deref() != Some("latest"));
            }
        }
        for recipe in &all {
            assert!(
                recipe.plugins.iter().any(|p| p.id == "langgenius/bedrock"),
                "{} lacks the Bedrock plugin",
                recipe.name
            );
            assert!(
                recipe.plugins.iter().any(|p| p.id == "langgenius/agent"),
                "{} lacks the agent strategies the classic Agent node needs",
                recipe.name
            );
        }
        let old = Recipe::builtin(Some("1.13.3")).unwrap();
        assert_eq!(
            old.images[3].image,
            "docker.io/langgenius/dify-plugin-daemon:0.5.3-local"
        );
        assert_eq!(
            Recipe::builtin(None).unwrap().name,
            all.last().unwrap().name
        );
        assert!(Recipe::builtin(Some("0.1")).is_err());
    }

    #[test]
    fn rejects_bad_recipes() {
        assert!(Recipe::parse("name='x'\ndify_version='1'\nimages=[]", "t").is_err());
        let dup = "name='x'\ndify_version='1'\n[[images]]\nrole='api'\nimage='a/b:1'\n[[images]]\nrole='api'\nimage='a/c:1'";
        assert!(
            Recipe::parse(dup, "t")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let unknown =
            "name='x'\ndify_version='1'\ncolour='red'\n[[images]]\nrole='api'\nimage='a/b:1'";
        assert!(Recipe::parse(unknown, "t").is_err());
        for (name, version) in [
            ("../../escaped", "1"),
            ("my bundle", "1"),
            ("a\\nb", "1"),
            ("", "1"),
            (".hidden", "1"),
            ("ok", "x name=evil"),
            ("ok", "1/2"),
        ] {
            let text = format!(
                "name=\"{name}\"\ndify_version=\"{version}\"\n[[images]]\nrole='api'\nimage='a/b:1'"
            );
            let refused = Recipe::parse(&text, "t").unwrap_err().to_string();
            assert!(refused.contains("must be"), "{name} {version}: {refused}");
            assert!(!refused.contains('\n'), "{refused}");
        }
        let fine = "name='dify-1.13.3_custom'\ndify_version='1.13.3+local'\n[[images]]\nrole='api'\nimage='a/b:1'";
        assert!(Recipe::parse(fine, "t").is_ok());
    }
}
