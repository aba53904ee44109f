package app

// TLSConfig: TLS on the public listener and between managers and farms.
type TLSConfig struct{}
