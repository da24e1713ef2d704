' report.vbs: tell netdeploy that Windows on {{ node.hostname }} is up (rollout API).
' Usage: cscript //nologo //B report.vbs URL TOKEN KIND
'   TOKEN is this node's report token: rendered into its own answer files, good only for this
'   rollout's health/joined report, and only from an address netdeploy knows the node by (the
'   one its agent claimed from, or the config's vars.ip). See docs/security.md.
'   KIND health: the first node; waits until the Cluster service (ClusSvc) runs, then reports
'                {"healthy": true}, which forms the cluster and releases the next nodes.
'   KIND joined: any other node; waits for ClusSvc the same way, then reports {"state": "joined"}.
' With a cluster kind, both also send the cluster's own member list (the raw output of
' {{ cluster.formation.members_source if cluster and cluster.formation else "the cluster's tool" }}), which netdeploy parses: the gate completes only when it lists every node.
' Windows Server 2003 has no curl; MSXML2.ServerXMLHTTP ships with it. A failed report is
' logged to %SystemRoot%\Temp\netdeploy-report.log, retried, and never blocks the logon.
Option Explicit
Dim args, shell, fso, log, kind, body, running, tries, status, members
Set args = WScript.Arguments
Set shell = CreateObject("WScript.Shell")
Set fso = CreateObject("Scripting.FileSystemObject")
Set log = fso.OpenTextFile(shell.ExpandEnvironmentStrings("%SystemRoot%\Temp\netdeploy-report.log"), 8, True)
If args.Count < 3 Then
    log.WriteLine Now & " usage: report.vbs URL TOKEN health|joined"
    WScript.Quit 2
End If
kind = args(2)

Function ClusterServiceRunning()
    Dim wmi, services, svc
    ClusterServiceRunning = False
    On Error Resume Next
    Set wmi = GetObject("winmgmts:\\.\root\cimv2")
    Set services = wmi.ExecQuery("SELECT State FROM Win32_Service WHERE Name = 'ClusSvc'")
    For Each svc In services
        If svc.State = "Running" Then ClusterServiceRunning = True
    Next
End Function

Function ClusterMembers()
    ' the cluster's member list as the cluster itself prints it; "" when it printed no table
    Dim exec, text
    ClusterMembers = ""
{% if cluster and cluster.formation %}
    On Error Resume Next
    Set exec = shell.Exec("cmd /c {{ cluster.formation.members_command | replace('"', '""') }} 2>&1")
    text = exec.StdOut.ReadAll()
    If Err.Number = 0 And InStr(text, "---") > 0 Then ClusterMembers = text
{% endif %}
End Function

Function JsonString(text)
    text = Replace(text, "\", "\\")
    text = Replace(text, """", "\""")
    text = Replace(text, vbCr, "\r")
    text = Replace(text, vbLf, "\n")
    text = Replace(text, vbTab, "\t")
    JsonString = """" & text & """"
End Function

' up to 10 minutes for the cluster service to come up
running = False
For tries = 1 To 60
    If ClusterServiceRunning() Then
        running = True
        Exit For
    End If
    WScript.Sleep 10000
Next

If kind = "health" Then
    If running Then
        body = "{""healthy"": true, ""message"": ""cluster service online on %COMPUTERNAME%""}"
    Else
        body = "{""healthy"": false, ""message"": ""cluster service not running on %COMPUTERNAME% after 10 minutes""}"
    End If
ElseIf running Then
    body = "{""state"": ""joined"", ""message"": ""cluster service joined on %COMPUTERNAME%""}"
Else
    body = "{""state"": ""failed"", ""message"": ""cluster service not running on %COMPUTERNAME% after 10 minutes""}"
End If
body = shell.ExpandEnvironmentStrings(body)
members = ""
If running Then members = ClusterMembers()
If members <> "" Then
    body = Left(body, Len(body) - 1) & ", ""source"": ""{{ cluster.formation.members_source if cluster and cluster.formation else "" }}"", ""output"": " & JsonString(members) & "}"
End If

Function Post(url, token, text)
    Dim http
    Post = 0
    On Error Resume Next
    Set http = CreateObject("MSXML2.ServerXMLHTTP")
    http.open "POST", url, False
    http.setRequestHeader "Content-Type", "application/json"
    http.setRequestHeader "Authorization", "Bearer " & token
    http.send text
    If Err.Number = 0 Then Post = http.status
End Function

For tries = 1 To 10
    status = Post(args(0), args(1), body)
    log.WriteLine Now & " report " & kind & ": HTTP " & status
    If status = 200 Then WScript.Quit 0
    ' refused (wrong token, wrong address, wrong state): retrying cannot help; the admin sees it
    If status = 400 Or status = 403 Or status = 404 Or status = 409 Then WScript.Quit 3
    WScript.Sleep 5000 * tries
Next
WScript.Quit 1
