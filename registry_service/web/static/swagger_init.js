// Reads the configuration the server embedded as JSON and starts Swagger UI with it.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("swagger-config").textContent);
  config.presets = [SwaggerUIBundle.presets.apis];
  config.layout = "BaseLayout";
  window.ui = SwaggerUIBundle(config);
})();
