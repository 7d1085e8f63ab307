/**
 * RFC 3875 §6.2.2: a local redirect's Location is a path and a query, no fragment (the fragment
 * is the client's: a server never sees one). `Location: /path#part` from a script is therefore
 * not re-processed inside the route (it was looked up with `#part` in its path: a 404 the script
 * never meant), but goes to the client as the 302 it asks for, fragment kept (as with
 * localRedirects off). A plain local path still is a local redirect.
 */
import t from 'tap'
import { guardLeaks } from '../helpers/leaks.js'
import { cgiProxy, fetchRaw, tempDir, writeScripts } from './harness.js'

t.test('a Location with a fragment is a client redirect, not a local one', async (t) => {
  guardLeaks(t)
  const dir = tempDir(t)
  writeScripts(dir, {
    'frag.sh': "#!/bin/sh\nprintf 'Location: /c/ok.sh?x=1#part\\n\\n'\n",
    'local.sh': "#!/bin/sh\nprintf 'Location: /c/ok.sh?x=1\\n\\n'\n",
    'ok.sh': "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok %s' \"$QUERY_STRING\"\n"
  })
  const p = await cgiProxy(t, { cgi: {} }, [{ match: { prefix: '/c/' }, protocol: 'cgi', spawn: 'cgi', docroot: dir, stripPrefix: true, localRedirects: true }])
  const frag = await fetchRaw(`${p.url}/c/frag.sh`)
  t.same([frag.status, frag.headers.location, frag.complete], [302, '/c/ok.sh?x=1#part', true], 'the client gets the 302, fragment kept')
  const local = await fetchRaw(`${p.url}/c/local.sh`)
  t.same([local.status, local.body.toString()], [200, 'ok x=1'], 'a path and query stays a local redirect')
})
