' report.vbs: tell netdeploy that Windows on {{ node.hostname }} reached a step.
' Usage: cscript //nologo //B report.vbs EVENTS_URL TOKEN STEP
' Windows Server 2003 has no curl; MSXML2.ServerXMLHTTP ships with it. Best effort: a failed
' report is logged to %SystemRoot%\Temp\netdeploy-report.log and never blocks the logon.
Option Explicit
Dim args, http, shell, fso, log, body
Set args = WScript.Arguments
Set shell = CreateObject("WScript.Shell")
Set fso = CreateObject("Scripting.FileSystemObject")
Set log = fso.OpenTextFile(shell.ExpandEnvironmentStrings("%SystemRoot%\Temp\netdeploy-report.log"), 8, True)
If args.Count < 3 Then
    log.WriteLine Now & " usage: report.vbs EVENTS_URL TOKEN STEP"
    WScript.Quit 2
End If
body = "{""step"": """ & args(2) & """, ""hostname"": """ & shell.ExpandEnvironmentStrings("%COMPUTERNAME%") & """}"
On Error Resume Next
Set http = CreateObject("MSXML2.ServerXMLHTTP")
http.open "POST", args(0), False
http.setRequestHeader "Content-Type", "application/json"
http.setRequestHeader "Authorization", "Bearer " & args(1)
http.send body
If Err.Number <> 0 Then
    log.WriteLine Now & " report " & args(2) & " failed: " & Err.Description
    WScript.Quit 1
End If
log.WriteLine Now & " report " & args(2) & ": HTTP " & http.status
WScript.Quit 0
