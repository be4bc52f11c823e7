"""Member verification: a server-to-server proxy to an association's member directory."""
