//! CloudFormation templates as typed Rust values: a [`Template`] of resources, parameters and
//! outputs, serialised with serde — never text templates. The VPC endpoints stack and the
//! Dify application stack are built from it.

pub mod app;
pub mod endpoints;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    #[serde(rename = "AWSTemplateFormatVersion")]
    pub format_version: &'static str,
    pub description: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Parameter>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mappings: BTreeMap<String, Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, Value>,
    /// Checked by CloudFormation against the parameters before any change is made.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, Value>,
    pub resources: BTreeMap<String, Resource>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Output>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Parameter {
    #[serde(rename = "Type")]
    pub kind: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_value: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_value: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: String,
    pub properties: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Created only when this condition holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// `Retain` or `Snapshot` for data that must outlive the stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_replace_policy: Option<&'static str>,
}

impl Resource {
    pub fn depends_on(&mut self, names: &[&str]) -> &mut Self {
        self.depends_on.extend(names.iter().map(|n| n.to_string()));
        self
    }

    pub fn only_if(&mut self, condition: &str) -> &mut Self {
        self.condition = Some(condition.to_owned());
        self
    }

    /// What happens to the resource when the stack deletes or replaces it: `Retain` or
    /// `Snapshot` for data that must outlive the stack, `Delete` written out where losing it
    /// is intended.
    pub fn keep(&mut self, policy: &'static str) -> &mut Self {
        self.deletion_policy = Some(policy);
        self.update_replace_policy = Some(policy);
        self
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Output {
    pub description: String,
    pub value: Value,
}

impl Template {
    pub fn new(description: impl Into<String>) -> Self {
        Template {
            format_version: "2010-09-09",
            description: description.into(),
            ..Template::default()
        }
    }

    pub fn resource(&mut self, name: &str, kind: &str, properties: Value) -> &mut Resource {
        let resource = Resource {
            kind: kind.to_owned(),
            properties,
            depends_on: Vec::new(),
            condition: None,
            deletion_policy: None,
            update_replace_policy: None,
        };
        put(&mut self.resources, name, resource)
    }

    pub fn output(&mut self, name: &str, description: &str, value: Value) {
        self.outputs.insert(
            name.to_owned(),
            Output {
                description: description.to_owned(),
                value,
            },
        );
    }

    /// A string parameter with a default (`None`: required).
    pub fn parameter(
        &mut self,
        name: &str,
        kind: &str,
        description: &str,
        default: Option<&str>,
    ) -> &mut Parameter {
        let parameter = Parameter {
            kind: kind.to_owned(),
            description: description.to_owned(),
            default: default.map(str::to_owned),
            allowed_values: Vec::new(),
            allowed_pattern: None,
            min_value: None,
            max_value: None,
        };
        put(&mut self.parameters, name, parameter)
    }

    pub fn rule(&mut self, name: &str, rule: Value) {
        self.rules.insert(name.to_owned(), rule);
    }

    pub fn condition(&mut self, name: &str, rule: Value) {
        self.conditions.insert(name.to_owned(), rule);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Inserts or replaces `name`, returning the stored value.
fn put<'a, V>(map: &'a mut BTreeMap<String, V>, name: &str, value: V) -> &'a mut V {
    match map.entry(name.to_owned()) {
        std::collections::btree_map::Entry::Occupied(mut slot) => {
            slot.insert(value);
            slot.into_mut()
        }
        std::collections::btree_map::Entry::Vacant(slot) => slot.insert(value),
    }
}

/// `{"Ref": name}`.
pub fn reference(name: &str) -> Value {
    json!({ "Ref": name })
}

/// `{"Fn::Sub": text}`.
pub fn sub(text: &str) -> Value {
    json!({ "Fn::Sub": text })
}

/// `{"Fn::GetAtt": [resource, attribute]}`.
pub fn get_att(resource: &str, attribute: &str) -> Value {
    json!({ "Fn::GetAtt": [resource, attribute] })
}

/// `{"Fn::If": [condition, then, otherwise]}`.
pub fn if_(condition: &str, then: Value, otherwise: Value) -> Value {
    json!({ "Fn::If": [condition, then, otherwise] })
}

/// `{"Ref": "AWS::NoValue"}`: leaves a property out.
pub fn no_value() -> Value {
    reference("AWS::NoValue")
}

/// `{"Fn::Equals": [Ref parameter, value]}`.
pub fn equals(parameter: &str, value: &str) -> Value {
    json!({ "Fn::Equals": [reference(parameter), value] })
}

/// A Name tag.
pub fn name_tag(name: &str) -> Value {
    json!([{ "Key": "Name", "Value": name }])
}
