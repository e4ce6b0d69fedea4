// Command strata serves the Strata platform and carries its CLI; see internal/cli.
package main

import (
	"os"

	"github.com/stratadb/strata/internal/cli"
)

func main() { os.Exit(cli.Main()) }
