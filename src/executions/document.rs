//! The executions part of the OpenAPI document, generated from the kind
//! registry so that a kind appears in it by being registered.
//!
//! A submission (`CreateExecutionRequest`) is a `oneOf` over the kinds with a
//! `kind` discriminator (internal kinds, which only the service enqueues,
//! appear only in responses); each branch is the options every submission shares
//! (`ExecutionOptions`, written once) and that kind's `kind` and `input`. A
//! name preview (`GenerateNameRequest`) is the same union without the options,
//! and a response (`ExecutionResponse`) the same over the summary every
//! execution has (`ExecutionSummary`) with that kind's input and output. A
//! generated client gets a discriminated union: after `kind === "sleep"`,
//! `input` is a `SleepInput` and `result` a `SleepOutput`.

use serde_json::Value;
use utoipa::PartialSchema;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOf, Discriminator, Object, ObjectBuilder, OneOf, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::executions::kinds::KindSchemas;
use crate::executions::schemas::{CreateExecutionRequest, ExecutionResponse, KindName};

/// The component every `kind` field and filter refers to: the registered names.
const KIND_COMPONENT: &str = "ExecutionKind";
/// The options every submission shares, whatever its kind.
const OPTIONS_COMPONENT: &str = "ExecutionOptions";
/// What every execution has, whatever its kind (the list item).
const SUMMARY_COMPONENT: &str = "ExecutionSummary";

/// Every executions component the registry generates: each kind's input and
/// output, the registered kind names, and the unions over the kinds.
pub fn components(kinds: &[KindSchemas]) -> Vec<(String, RefOr<Schema>)> {
    let mut components = Vec::new();
    for kind in kinds {
        components.push(kind.input.clone());
        components.push(kind.output.clone());
    }
    components.push((KIND_COMPONENT.to_owned(), kind_names(kinds)));
    components.push((OPTIONS_COMPONENT.to_owned(), shared_options()));
    let mut submission = Union::new(
        "CreateExecutionRequest",
        "ExecutionRequest",
        "Submits background work: the options every submission shares and one \
         registered kind's `kind` and `input`.",
    );
    let mut preview = Union::new(
        "GenerateNameRequest",
        "GenerateNameRequest",
        "A submission's kind and input, to preview the name the service would give it.",
    );
    let mut response = Union::new(
        "ExecutionResponse",
        "Execution",
        "An execution as clients see it: its summary and its kind's input, result and errors.",
    );
    let details = response_details();
    for kind in kinds {
        let prefix = pascal_case(kind.name);
        // An internal kind is one clients cannot submit: only responses have it.
        if !kind.internal {
            components.extend([
                submission.branch(kind, &prefix, submission_branch(kind)),
                preview.branch(kind, &prefix, preview_branch(kind)),
            ]);
        }
        components.push(response.branch(kind, &prefix, execution_branch(kind, &details)));
    }
    components.extend([
        submission.into_component(),
        preview.into_component(),
        response.into_component(),
    ]);
    components
}

/// A `oneOf` over the kinds, collecting its branches as they are made.
struct Union {
    /// The union's component name.
    name: &'static str,
    /// What each branch's component name ends with, after the kind's.
    branch_suffix: &'static str,
    description: &'static str,
    /// Each kind's name and its branch's component name.
    branches: Vec<(&'static str, String)>,
}

impl Union {
    fn new(name: &'static str, branch_suffix: &'static str, description: &'static str) -> Self {
        Self {
            name,
            branch_suffix,
            description,
            branches: Vec::new(),
        }
    }

    /// Names one kind's branch (`SleepExecutionRequest` for `sleep` in
    /// `CreateExecutionRequest`) and returns it as a component.
    fn branch(
        &mut self,
        kind: &KindSchemas,
        prefix: &str,
        schema: Schema,
    ) -> (String, RefOr<Schema>) {
        let name = format!("{prefix}{}", self.branch_suffix);
        self.branches.push((kind.name, name.clone()));
        (name, RefOr::T(schema))
    }

    /// The union itself, discriminated by `kind`.
    fn into_component(self) -> (String, RefOr<Schema>) {
        let mut union = OneOf::new();
        union.description = Some(self.description.to_owned());
        union.items = self
            .branches
            .iter()
            .map(|(_, component)| Ref::from_schema_name(component.clone()).into())
            .collect();
        union.discriminator = Some(Discriminator::with_mapping(
            "kind",
            self.branches
                .iter()
                .map(|(kind, component)| (*kind, format!("#/components/schemas/{component}"))),
        ));
        (self.name.to_owned(), RefOr::T(Schema::OneOf(union)))
    }
}

/// `ExecutionKind`: a string naming a registered kind.
fn kind_names(kinds: &[KindSchemas]) -> RefOr<Schema> {
    let mut names = object_of(KindName::schema());
    names.enum_values = Some(kinds.iter().map(|kind| Value::from(kind.name)).collect());
    RefOr::T(Schema::Object(names))
}

/// `ExecutionOptions`: `CreateExecutionRequest`'s own fields but `kind` and
/// `input`, which each kind's branch states. Open to other properties, since
/// each branch adds its own; the branch closes itself.
fn shared_options() -> RefOr<Schema> {
    let mut options = object_of(CreateExecutionRequest::schema());
    for per_kind in ["kind", "input"] {
        options.properties.shift_remove(per_kind);
        options.required.retain(|name| name != per_kind);
    }
    options.additional_properties = None;
    options.description = Some("What every submission may set, whatever its kind.".to_owned());
    RefOr::T(Schema::Object(options))
}

/// `ExecutionResponse`'s own fields (`input`, `result`, `errors`) next to the
/// summary it flattens in, as the derived schema states them.
fn response_details() -> Object {
    match ExecutionResponse::schema() {
        RefOr::T(Schema::AllOf(all_of)) => all_of
            .items
            .into_iter()
            .find_map(|part| match part {
                RefOr::T(Schema::Object(object)) => Some(object),
                _ => None,
            })
            .unwrap_or_default(),
        other => object_of(other),
    }
}

/// The object a schema is, or an empty one.
fn object_of(schema: RefOr<Schema>) -> Object {
    match schema {
        RefOr::T(Schema::Object(object)) => object,
        _ => Object::new(),
    }
}

/// `{"type": "string", "enum": [name]}`: the discriminator's value in one branch.
fn kind_literal(kind: &KindSchemas) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([kind.name]))
        .build()
        .into()
}

/// A reference to `component`, described.
fn described_ref(component: &str, description: Option<&String>) -> RefOr<Schema> {
    let mut reference = Ref::from_schema_name(component);
    reference.description = description.cloned().unwrap_or_default();
    RefOr::Ref(reference)
}

/// `{kind, input}` of one kind, both required.
fn kind_and_input(kind: &KindSchemas) -> Object {
    let mut object = Object::with_type(Type::Object);
    object
        .properties
        .insert("kind".to_owned(), kind_literal(kind));
    object.properties.insert(
        "input".to_owned(),
        described_ref(
            &kind.input.0,
            Some(&format!("The input of `{}`.", kind.name)),
        ),
    );
    object.required = vec!["kind".to_owned(), "input".to_owned()];
    object
}

/// `SleepExecutionRequest`: the shared options and `sleep`'s `kind` and
/// `input`, closed to other properties (`unevaluatedProperties`, which sees
/// the properties of both parts, where `additionalProperties` would see one).
fn submission_branch(kind: &KindSchemas) -> Schema {
    let mut branch = AllOf::new();
    branch.description = Some(format!("Submits a `{}` execution.", kind.name));
    branch.items = vec![
        Ref::from_schema_name(OPTIONS_COMPONENT).into(),
        Schema::Object(kind_and_input(kind)).into(),
    ];
    branch.extensions = Some(closed());
    Schema::AllOf(branch)
}

/// `SleepGenerateNameRequest`: `sleep`'s `kind` and `input`, nothing else.
fn preview_branch(kind: &KindSchemas) -> Schema {
    let mut branch = kind_and_input(kind);
    branch.description = Some(format!("A `{}` submission's kind and input.", kind.name));
    branch.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    Schema::Object(branch)
}

/// `SleepExecution`: the summary, with `sleep` as its kind and `sleep`'s
/// input and (once succeeded) output.
fn execution_branch(kind: &KindSchemas, details: &Object) -> Schema {
    let mut own = Object::with_type(Type::Object);
    own.properties.insert("kind".to_owned(), kind_literal(kind));
    own.properties.extend(details.properties.clone());
    let described = |name: &str| {
        details
            .properties
            .get(name)
            .and_then(|schema| match schema {
                RefOr::T(Schema::Object(object)) => object.description.clone(),
                _ => None,
            })
    };
    own.properties.insert(
        "input".to_owned(),
        described_ref(&kind.input.0, described("input").as_ref()),
    );
    let mut result = OneOf::new();
    result.description = described("result");
    result.items = vec![
        Ref::from_schema_name(kind.output.0.clone()).into(),
        Object::with_type(Type::Null).into(),
    ];
    own.properties
        .insert("result".to_owned(), Schema::OneOf(result).into());
    // A response always carries every field, `result` too (null until it succeeds).
    own.required = own.properties.keys().cloned().collect();
    let mut branch = AllOf::new();
    branch.description = Some(format!("A `{}` execution.", kind.name));
    branch.items = vec![
        Ref::from_schema_name(SUMMARY_COMPONENT).into(),
        Schema::Object(own).into(),
    ];
    Schema::AllOf(branch)
}

/// `unevaluatedProperties: false`, which utoipa's `AllOf` has no field for.
fn closed() -> utoipa::openapi::extensions::Extensions {
    [("unevaluatedProperties", Value::Bool(false))]
        .into_iter()
        .collect()
}

/// `embed_texts` → `EmbedTexts`, for component names.
fn pascal_case(name: &str) -> String {
    name.split(['_', '-'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;
    use utoipa::ToSchema;

    use super::*;
    use crate::executions::context::{JobContext, JobError};
    use crate::executions::kinds::{ExecutionKind, KindRegistry, Sleep};
    use crate::shared::error::FieldError;

    /// A kind only this test registers.
    struct Paint;

    /// Input of `paint`.
    #[derive(Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    struct PaintInput {
        colour: String,
    }

    /// Output of `paint`.
    #[derive(Serialize, Deserialize, ToSchema)]
    struct PaintOutput {
        layers: u32,
    }

    impl ExecutionKind for Paint {
        const NAME: &'static str = "paint_walls";
        type Input = PaintInput;
        type Output = PaintOutput;

        fn validate(&self, _input: &PaintInput) -> Vec<FieldError> {
            Vec::new()
        }

        fn describe(&self, input: &PaintInput) -> String {
            input.colour.clone()
        }

        async fn run(
            &self,
            _input: PaintInput,
            _context: JobContext,
        ) -> Result<PaintOutput, JobError> {
            Ok(PaintOutput { layers: 2 })
        }
    }

    fn document(registry: &KindRegistry) -> Value {
        let components: serde_json::Map<String, Value> = registry
            .schemas()
            .into_iter()
            .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or_default()))
            .collect();
        Value::Object(components)
    }

    #[test]
    fn a_registered_kind_is_a_branch_of_every_union() {
        let with_paint = document(&KindRegistry::new().register(Sleep).register(Paint));
        assert_eq!(
            with_paint["ExecutionKind"]["enum"],
            json!(["paint_walls", "sleep"])
        );
        for (union, branch) in [
            ("CreateExecutionRequest", "PaintWallsExecutionRequest"),
            ("GenerateNameRequest", "PaintWallsGenerateNameRequest"),
            ("ExecutionResponse", "PaintWallsExecution"),
        ] {
            let target = format!("#/components/schemas/{branch}");
            assert_eq!(with_paint[union]["discriminator"]["propertyName"], "kind");
            assert_eq!(
                with_paint[union]["discriminator"]["mapping"]["paint_walls"],
                json!(target)
            );
            assert!(
                with_paint[union]["oneOf"]
                    .as_array()
                    .is_some_and(|items| items.contains(&json!({"$ref": target}))),
                "{union}: {}",
                with_paint[union]
            );
            assert!(with_paint.get(branch).is_some(), "{branch}");
        }
        let submission = &with_paint["PaintWallsExecutionRequest"];
        assert_eq!(submission["unevaluatedProperties"], false);
        assert_eq!(
            submission["allOf"][0]["$ref"],
            "#/components/schemas/ExecutionOptions"
        );
        let own = &submission["allOf"][1];
        assert_eq!(own["properties"]["kind"]["enum"], json!(["paint_walls"]));
        assert_eq!(
            own["properties"]["input"]["$ref"],
            "#/components/schemas/PaintInput"
        );
        assert_eq!(own["required"], json!(["kind", "input"]));
        let execution = &with_paint["PaintWallsExecution"]["allOf"];
        assert_eq!(
            execution[0]["$ref"],
            "#/components/schemas/ExecutionSummary"
        );
        assert_eq!(
            execution[1]["properties"]["result"]["oneOf"],
            json!([{"$ref": "#/components/schemas/PaintOutput"}, {"type": "null"}])
        );
        assert!(with_paint.get("PaintInput").is_some() && with_paint.get("PaintOutput").is_some());

        let without = document(&KindRegistry::new().register(Sleep));
        assert_eq!(without["ExecutionKind"]["enum"], json!(["sleep"]));
        assert!(without.get("PaintWallsExecutionRequest").is_none());
        assert!(
            without["CreateExecutionRequest"]["discriminator"]["mapping"]
                .get("paint_walls")
                .is_none()
        );
    }

    #[test]
    fn an_internal_kind_is_only_in_the_responses_and_the_kind_names() {
        let document = document(&KindRegistry::new().register(Sleep).register_internal(Paint));
        assert_eq!(
            document["ExecutionKind"]["enum"],
            json!(["paint_walls", "sleep"])
        );
        assert_eq!(
            document["ExecutionResponse"]["discriminator"]["mapping"]["paint_walls"],
            "#/components/schemas/PaintWallsExecution"
        );
        for union in ["CreateExecutionRequest", "GenerateNameRequest"] {
            let mapping = &document[union]["discriminator"]["mapping"];
            assert!(mapping.get("paint_walls").is_none(), "{union}: {mapping}");
            assert!(mapping.get("sleep").is_some(), "{union}: {mapping}");
        }
        assert!(document.get("PaintWallsExecutionRequest").is_none());
        assert!(document.get("PaintWallsGenerateNameRequest").is_none());
    }

    #[test]
    fn the_shared_options_are_the_submission_fields_but_kind_and_input() {
        let RefOr::T(Schema::Object(options)) = shared_options() else {
            panic!("the options are an object");
        };
        assert_eq!(
            serde_json::to_value(&options).unwrap_or_default()["type"],
            "object"
        );
        let names: Vec<&str> = options.properties.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["name", "priority", "run_at", "max_attempts", "timeout_s"]
        );
        assert!(options.required.is_empty());
        assert!(
            options.additional_properties.is_none(),
            "each branch closes itself"
        );
    }

    #[test]
    fn component_names_are_pascal_case_kind_names() {
        assert_eq!(pascal_case("embed_texts"), "EmbedTexts");
        assert_eq!(pascal_case("sleep"), "Sleep");
        assert_eq!(pascal_case("a-b_c"), "ABC");
    }
}
