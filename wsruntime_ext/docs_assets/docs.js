// Starts Swagger UI on the runtime's own /openapi.json. Everything it loads comes
// from this runtime: the validator badge (an outside request) is turned off.
window.addEventListener("load", function () {
  var base = window.location.pathname.replace(/\/docs\/?$/, "");
  window.ui = SwaggerUIBundle({
    url: base + "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: true,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
