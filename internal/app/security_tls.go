package app

import (
	"crypto/tls"
	"errors"
	"net/http"

	"github.com/drover-dev/drover/internal/lib/certreload"
)

// TLSConfig: TLS on the public listener and between managers and farms.
// The files are re-read on SIGHUP; a bad file keeps what was loaded.
type TLSConfig struct {
	// TLSCert and TLSKey are the listener's certificate chain and key (PEM
	// files): the manager serves https and wss.
	TLSCert string `koanf:"tls_cert"`
	TLSKey  string `koanf:"tls_key"`
	// FarmCA is the CA bundle farms' certificates chain to: the manager
	// verifies the farms it dials over wss with it and requires a client
	// certificate of it on the farm API (mutual TLS), on top of the farm
	// token. It needs TLSCert.
	FarmCA string `koanf:"farm_ca"`
}

// errTLSPair is returned for a certificate without its key or a key
// without its certificate.
var errTLSPair = errors.New("--tls-cert and --tls-key go together")

// managerTLS is what TLSConfig makes of a manager: the listener's TLS
// configuration (nil without TLSCert) and the one for dialling farms (nil
// without FarmCA), with their reloads registered on r.
type managerTLS struct {
	listener, farms *tls.Config
	requireFarmCert bool
}

func (c TLSConfig) manager(r *reloads) (managerTLS, error) {
	var out managerTLS
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return out, errTLSPair
	}
	if c.TLSCert == "" {
		if c.FarmCA != "" {
			return out, errors.New("--farm-ca needs --tls-cert: farms present their client certificates over TLS")
		}
		return out, nil
	}
	pair, err := certreload.LoadPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return out, err
	}
	r.OnReload("tls certificate", pair.Reload)
	var farmCAs *certreload.Pool
	if c.FarmCA != "" {
		if farmCAs, err = certreload.LoadPool(c.FarmCA); err != nil {
			return out, err
		}
		r.OnReload("farm CA", farmCAs.Reload)
		out.farms = certreload.ClientConfig(farmCAs, nil)
		out.requireFarmCert = true
	}
	out.listener = certreload.ServerConfig(pair, farmCAs)
	return out, nil
}

// FarmTLSConfig: a farm's TLS, for its listener (the instances' wss the
// managers dial) and towards the managers.
type FarmTLSConfig struct {
	// TLSCert and TLSKey: the farm's listener serves https and wss, and
	// advertises https://.
	TLSCert string `koanf:"tls_cert"`
	TLSKey  string `koanf:"tls_key"`
	// ManagerCA is the CA bundle the managers' certificates chain to
	// (default: the system's roots).
	ManagerCA string `koanf:"manager_ca"`
	// TLSClientCert and TLSClientKey are the client certificate the farm
	// presents to managers that require one (their --farm-ca).
	TLSClientCert string `koanf:"tls_client_cert"`
	TLSClientKey  string `koanf:"tls_client_key"`
}

// farmTLS is what FarmTLSConfig makes of a farm: the listener's TLS
// configuration and the HTTP client for the managers (each nil when not
// configured), with their reloads registered on r.
func (c FarmTLSConfig) farm(r *reloads) (listener *tls.Config, client *http.Client, err error) {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, nil, errTLSPair
	}
	if (c.TLSClientCert == "") != (c.TLSClientKey == "") {
		return nil, nil, errors.New("--tls-client-cert and --tls-client-key go together")
	}
	if c.TLSCert != "" {
		pair, err := certreload.LoadPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, nil, err
		}
		r.OnReload("tls certificate", pair.Reload)
		listener = certreload.ServerConfig(pair, nil)
	}
	if c.ManagerCA == "" && c.TLSClientCert == "" {
		return listener, nil, nil
	}
	var roots *certreload.Pool
	if c.ManagerCA != "" {
		if roots, err = certreload.LoadPool(c.ManagerCA); err != nil {
			return nil, nil, err
		}
		r.OnReload("manager CA", roots.Reload)
	}
	var own *certreload.Pair
	if c.TLSClientCert != "" {
		if own, err = certreload.LoadPair(c.TLSClientCert, c.TLSClientKey); err != nil {
			return nil, nil, err
		}
		r.OnReload("tls client certificate", own.Reload)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = certreload.ClientConfig(roots, own)
	return listener, &http.Client{Transport: t}, nil
}
