package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/jsonhttp"
)

// apiKey is a key as the admin API shows it; Secret only in the answer
// to its creation.
type apiKey struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Tenant   string    `json:"tenant"`
	Roles    []string  `json:"roles"`
	ReadOnly bool      `json:"read_only"`
	Created  time.Time `json:"created"`
	Revoked  bool      `json:"revoked"`
	Secret   string    `json:"secret,omitempty"`
}

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke API keys on a manager",
		Long: `keys manages the API keys of a manager through its admin API (/admin/keys),
with the admin token (--admin-token or DROVER_ADMIN_TOKEN; on the manager's
own machine none is needed while the manager has no admin token and no
other authentication). A key's secret is printed once, when it is created:
the manager keeps only its hash.`,
		Example: `  drover keys create --name ci --tenant acme --read-only
  drover keys list
  drover keys revoke 3f9a0c1e2b4d6f70`,
		Args: cobra.NoArgs,
	}
	fs := cmd.PersistentFlags()
	base := fs.String("url", "http://localhost:8181", "the manager's base URL")
	token := fs.String("admin-token", "", "the manager's admin token (prefer DROVER_ADMIN_TOKEN)")
	call := func(cmd *cobra.Command, method, path string, body, out any) error {
		u, err := url.Parse(*base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--url %q: want http(s)://host[:port]", *base)
		}
		var h http.Header
		if t := cmp.Or(*token, os.Getenv("DROVER_ADMIN_TOKEN")); t != "" {
			h = bearer.Header(t)
		}
		_, err = jsonhttp.Call(cmd.Context(), http.DefaultClient, method, strings.TrimSuffix(*base, "/")+path, h, body, out)
		var se *jsonhttp.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound && path == "/admin/keys" {
			return errors.New("the manager has no API key store: start it with --auth-keys-file, or with JWTs configured")
		}
		return err
	}

	create := &cobra.Command{Use: "create", Short: "Create a key and print its secret, once", Args: cobra.NoArgs}
	name := create.Flags().String("name", "", "whose key it is (required); its user is key:NAME")
	tenant := create.Flags().String("tenant", "", "the tenant whose items the key sees (default: default)")
	roles := create.Flags().StringSlice("role", nil, "roles of the key (repeatable; default user)")
	readOnly := create.Flags().Bool("read-only", false, "the key may read but not upload, reconvert or delete")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		if *name == "" {
			return errors.New("--name is required")
		}
		var k apiKey
		req := map[string]any{"name": *name, "tenant": *tenant, "roles": *roles, "read_only": *readOnly}
		if err := call(cmd, http.MethodPost, "/admin/keys", req, &k); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "key %s (%s, tenant %s, roles %s", k.ID, k.Name, k.Tenant, strings.Join(k.Roles, ","))
		if k.ReadOnly {
			fmt.Fprint(out, ", read-only")
		}
		fmt.Fprintf(out, ")\nsecret: %s\nThe secret is shown this once; the manager keeps only its hash.\n", k.Secret)
		return nil
	}

	list := &cobra.Command{Use: "list", Short: "List the keys, without their secrets", Args: cobra.NoArgs}
	asJSON := list.Flags().Bool("json", false, "print JSON")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		var keys []apiKey
		if err := call(cmd, http.MethodGet, "/admin/keys", nil, &keys); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(keys)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tTENANT\tROLES\tREAD-ONLY\tCREATED\tREVOKED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\t%t\n", k.ID, k.Name, k.Tenant, strings.Join(k.Roles, ","),
				k.ReadOnly, k.Created.Format(time.RFC3339), k.Revoked)
		}
		return tw.Flush()
	}

	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke a key for good", Args: cobra.ExactArgs(1)}
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		if err := call(cmd, http.MethodDelete, "/admin/keys/"+url.PathEscape(args[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
		return nil
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
