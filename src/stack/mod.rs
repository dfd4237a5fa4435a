//! CloudFormation templates as typed Rust values: a [`Template`] of resources, parameters and
//! outputs, serialised with serde — never text templates. The VPC endpoints stack lives here;
//! the Dify application stack joins it.

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
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: String,
    pub properties: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
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
        };
        match self.resources.entry(name.to_owned()) {
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                slot.insert(resource);
                slot.into_mut()
            }
            std::collections::btree_map::Entry::Vacant(slot) => slot.insert(resource),
        }
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

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
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

/// A Name tag.
pub fn name_tag(name: &str) -> Value {
    json!([{ "Key": "Name", "Value": name }])
}
