"""The page's static files (HTML, ES modules, CSS); a package so that they ship in wheels."""
