//! The API's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and response types' `ToSchema` derives (see [`super::ApiDoc`]),
//! served as JSON and as a reference page rendered on the server (no script, nothing fetched
//! from elsewhere). The error answers every operation shares are added here once.

use std::sync::OnceLock;

use actix_web::{HttpResponse, Responder};
use askama::Template;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `unauthorized`, `not_found`, `forbidden`, `invalid`, `conflict`, `too_many_requests`,
    /// `too_large`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong, for a person; an `invalid` message names the field.
    pub message: String,
}

/// The bearer token scheme and the answers every operation may give: 401 without a valid
/// token (where one is needed), 503 while the database is unreachable, and 400/413 for a body
/// that is not what the operation expects.
pub struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (`rl_…`), made on the account page or with `rewardlab token create`."))
                    .build(),
            ),
        );
        let public: Vec<String> = doc.paths.paths.iter().filter(|(_, item)| is_public(item)).map(|(p, _)| p.clone()).collect();
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = public.contains(path);
            for op in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten() {
                add_common(op, public);
            }
        }
    }
}

fn is_public(item: &utoipa::openapi::PathItem) -> bool {
    item.get.as_ref().and_then(|op| op.security.as_ref()).is_some_and(|s| s.iter().all(|r| r == &Default::default()))
}

fn add_common(op: &mut Operation, public: bool) {
    let has_body = op.request_body.is_some();
    let mut add = |status: &str, description: &str| {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(description));
    };
    if !public {
        add("401", "No valid API token (`Authorization: Bearer rl_…`) or session.");
    }
    let has_query = op.parameters.iter().flatten().any(|p| matches!(p, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Query));
    if has_body {
        add("400", "The body is not what the operation expects; the message names the field.");
        add("413", "The body is too large.");
    } else if has_query {
        add("400", "A query parameter is not what the operation expects; the message names it.");
    }
    add("503", "The database is unreachable; try again shortly.");
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let schema = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"));
    ResponseBuilder::new().description(description).content("application/json", ContentBuilder::new().schema(Some(schema)).build()).build().into()
}

/// The description, built once.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(super::ApiDoc::openapi)
}

/// The description as JSON.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "meta", security(()),
    responses((status = 200, description = "This description (OpenAPI 3.1).", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl Responder {
    HttpResponse::Ok().json(document())
}

/// The API's reference page.
#[derive(Template)]
#[template(path = "api/reference.html")]
struct ReferencePage {
    title: String,
    version: String,
    operations: Vec<OperationView>,
    schemas: Vec<(String, String)>,
}

/// One operation as the reference page lists it.
struct OperationView {
    method: &'static str,
    path: String,
    id: String,
    summary: String,
    description: String,
    public: bool,
    parameters: Vec<(String, String, bool, String)>,
    body: Option<String>,
    responses: Vec<(String, String, String)>,
}

impl OperationView {
    fn new(method: &'static str, path: &str, op: &Operation) -> Self {
        let parameters = op
            .parameters
            .iter()
            .flatten()
            .filter_map(|p| match p {
                RefOr::T(p) => {
                    Some((p.name.clone(), location(&p.parameter_in), p.required == utoipa::openapi::Required::True, p.description.clone().unwrap_or_default()))
                }
                RefOr::Ref(_) => None,
            })
            .collect();
        let body = op.request_body.as_ref().map(|b| match b {
            RefOr::T(b) => contents(&b.content),
            RefOr::Ref(r) => r.ref_location.clone(),
        });
        let responses = op
            .responses
            .responses
            .iter()
            .map(|(status, r)| match r {
                RefOr::T(r) => (status.clone(), r.description.clone(), contents(&r.content)),
                RefOr::Ref(r) => (status.clone(), r.ref_location.clone(), String::new()),
            })
            .collect();
        Self {
            method,
            path: path.to_string(),
            id: op.operation_id.clone().unwrap_or_default(),
            summary: op.summary.clone().unwrap_or_default(),
            description: op.description.clone().unwrap_or_default(),
            public: op.security.as_ref().is_some_and(|s| s.iter().all(|r| r == &Default::default())),
            parameters,
            body,
            responses,
        }
    }
}

/// `media type: schema` for each content of a body.
fn contents<'a>(content: impl IntoIterator<Item = (&'a String, &'a RefOr<utoipa::openapi::Content>)>) -> String {
    let one = |c: &RefOr<utoipa::openapi::Content>| match c {
        RefOr::T(c) => schema_name(c.schema.as_ref()),
        RefOr::Ref(r) => r.ref_location.clone(),
    };
    content.into_iter().map(|(ct, c)| format!("{ct}: {}", one(c))).collect::<Vec<_>>().join("; ")
}

fn location(at: &utoipa::openapi::path::ParameterIn) -> String {
    serde_json::to_value(at).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A schema as the page names it: the component it refers to, or its JSON.
fn schema_name(schema: Option<&RefOr<utoipa::openapi::Schema>>) -> String {
    match schema {
        Some(RefOr::Ref(r)) => r.ref_location.rsplit('/').next().unwrap_or_default().to_string(),
        Some(RefOr::T(s)) => serde_json::to_string(s).unwrap_or_default(),
        None => String::new(),
    }
}

fn reference_page() -> ReferencePage {
    let doc = document();
    let mut operations = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [("GET", &item.get), ("POST", &item.post), ("PUT", &item.put), ("PATCH", &item.patch), ("DELETE", &item.delete)];
        operations.extend(ops.into_iter().filter_map(|(m, op)| op.as_ref().map(|op| OperationView::new(m, path, op))));
    }
    let schemas =
        doc.components.iter().flat_map(|c| c.schemas.iter()).map(|(name, s)| (name.clone(), serde_json::to_string_pretty(s).unwrap_or_default())).collect();
    ReferencePage { title: doc.info.title.clone(), version: doc.info.version.clone(), operations, schemas }
}

/// The reference page: every operation, its parameters, body and answers, then the schemas.
#[utoipa::path(get, path = "/api/v1/docs", operation_id = "reference", tag = "meta", security(()),
    responses((status = 200, description = "The API's reference page.", content_type = "text/html", body = String)))]
pub async fn reference() -> Result<HttpResponse, crate::web::error::ApiError> {
    let html = reference_page().render().map_err(anyhow::Error::from)?;
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html))
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use crate::domain::export::{Export, ExportDoc, Options};

    /// An export is serialized by hand; its described fields are the ones it has.
    #[test]
    fn the_export_schema_names_the_serialized_fields() {
        let e = Export {
            id: Default::default(),
            project_id: Default::default(),
            format: "comparisons".into(),
            options: Options::default(),
            snapshot: String::new(),
            files: Vec::new(),
            created_at: chrono::Utc::now(),
        };
        let json = serde_json::to_value(&e).unwrap();
        let serialized: Vec<&String> = json.as_object().unwrap().keys().collect();
        let schema = serde_json::to_value(ExportDoc::schema()).unwrap();
        let described: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(serialized, described);
    }

    #[test]
    fn the_description_is_openapi_3_1_with_every_route() {
        let doc = serde_json::to_value(super::document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path) in super::super::ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
    }
}
