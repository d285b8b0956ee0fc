"""The console's pages, one module per area; `relay.web.app` lists their routes."""
