package app

// AuthConfig: authentication, origins, audit.
type AuthConfig struct{}
