package app

// SecurityConfig is who may do what on a manager (`drover up` and
// `drover manager`): authentication and origins (AuthConfig), quotas and
// rate limits (LimitsConfig), and TLS (TLSConfig). Each part lives in a
// file of its own; their keys are flat, as the flags name them
// (auth_jwt_key for --auth-jwt-key).
type SecurityConfig struct {
	AuthConfig   `koanf:",squash"`
	LimitsConfig `koanf:",squash"`
	TLSConfig    `koanf:",squash"`
	HardenConfig `koanf:",squash"`
}
