//! The labelling page. Its script reads what the project asks of a labeller from a JSON block.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Serialize;

use crate::db::projects::Project;
use crate::domain::{Role, Slug, TaskKind};
use crate::routes::pages::{html, Layout, SanitizedHtml};
use crate::services::project;
use crate::web::auth::Auth;
use crate::web::error::PageError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/label.html")]
pub struct LabelPage {
    pub layout: Layout,
    pub project: Project,
    pub config: LabelConfig,
    /// The guidelines for the side panel (`g`).
    pub guidelines_html: SanitizedHtml,
    /// Why the caller is paused in the project (no tasks then).
    pub paused: Option<String>,
}

/// What static/label.js needs, read from `<script type="application/json" id="config">`.
#[derive(Serialize)]
pub struct LabelConfig {
    pub slug: Slug,
    pub kind: TaskKind,
    pub flags: Vec<String>,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub csrf: String,
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Labeller).await?;
    let config = LabelConfig {
        slug: p.slug.clone(),
        kind: p.kind,
        flags: p.flags.clone(),
        allow_ties: p.allow_ties,
        rating_enabled: p.rating_enabled,
        csrf: auth.csrf().to_string(),
    };
    let guidelines_html = SanitizedHtml::from_markdown(if p.guidelines.trim().is_empty() { "*No guidelines yet.*" } else { &p.guidelines });
    let paused = crate::services::quality::paused(&state.pool, &p, auth.user.id).await?;
    Ok(html(&LabelPage { layout: Layout::of(&auth), project: p, config, guidelines_html, paused }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Overlap, ProjectId};

    #[test]
    fn the_config_block_is_json_that_no_flag_can_break_out_of() {
        let flags = vec!["</script><b>\"x\" & 'y'".to_string()];
        let slug = Slug::parse("hh").unwrap();
        let project = Project {
            id: ProjectId::new(),
            slug: slug.clone(),
            name: "HH".into(),
            kind: TaskKind::Pairwise,
            guidelines: String::new(),
            flags: flags.clone(),
            allow_ties: true,
            rating_enabled: false,
            overlap: Overlap::DEFAULT,
            lease_seconds: 600,
            role: Role::Labeller,
        };
        let config = LabelConfig { slug, kind: TaskKind::Pairwise, flags, allow_ties: true, rating_enabled: false, csrf: "c".into() };
        let html = LabelPage { layout: Layout::default(), project, config, guidelines_html: SanitizedHtml::from_markdown(""), paused: None }.render().unwrap();
        let start = html.find(r#"<script type="application/json" id="config">"#).unwrap();
        let body = &html[start..];
        let json = &body[body.find('>').unwrap() + 1..body.find("</script>").unwrap()];
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(value["flags"][0], "</script><b>\"x\" & 'y'");
        assert_eq!((value["slug"].as_str(), value["kind"].as_str(), value["csrf"].as_str()), (Some("hh"), Some("pairwise"), Some("c")));
    }
}
