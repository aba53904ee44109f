package api

import (
	"strings"

	"github.com/gin-gonic/gin"
)

// shattered serves a part of an item's shattered assembly (or its index)
// by name. The name is the rest of the path: one that would leave the
// item's directory (a slash, encoded or not, a backslash, "..", an
// absolute path) is refused with 400.
func (a *API) shattered(c *gin.Context) {
	name := strings.TrimPrefix(c.Param("name"), "/")
	obj, f, err := a.svc.OpenShattered(c.Request.Context(), c.Param("id"), name)
	a.serve(c, obj, f, err)
}

// shatteredXML serves the index of an item's shattered assembly.
func (a *API) shatteredXML(c *gin.Context) {
	obj, f, err := a.svc.OpenShatteredIndex(c.Request.Context(), c.Param("id"))
	a.serve(c, obj, f, err)
}
